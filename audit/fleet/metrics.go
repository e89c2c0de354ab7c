package fleet

import "github.com/prometheus/client_golang/prometheus"

// metrics are the forwarder's Prometheus metrics.
type metrics struct {
	rows       prometheus.Counter
	duplicates prometheus.Counter
	batches    prometheus.Counter
	failures   prometheus.Counter
	lost       prometheus.Counter
	rewinds    prometheus.Counter
	lagRows    prometheus.Gauge
	lagSeconds prometheus.Gauge
	last       prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		rows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "credbroker_audit_forward_rows_total",
			Help: "Audit rows sent to the fleet store in committed batches (rows it held already included).",
		}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "credbroker_audit_forward_duplicate_rows_total",
			Help: "Rows sent that the fleet store held already (sent again after a crash or a rewound log) and ignored.",
		}),
		batches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "credbroker_audit_forward_batches_total",
			Help: "Batches the fleet store committed.",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "credbroker_audit_forward_failures_total",
			Help: "Forwarding attempts that failed (store unreachable or refusing, log unreadable); each is retried with backoff.",
		}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "credbroker_audit_forward_pruned_unsent_rows_total",
			Help: "Rows pruned from the local log before they were forwarded: the fleet store will not have them.",
		}),
		rewinds: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "credbroker_audit_forward_rewinds_total",
			Help: "Times the local log no longer held the rows forwarded (cut short or replaced) and was forwarded again from its start.",
		}),
		lagRows: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "credbroker_audit_forward_lag_rows",
			Help: "Rows of the local log not yet forwarded.",
		}),
		lagSeconds: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "credbroker_audit_forward_lag_seconds",
			Help: "Age of the oldest row not yet forwarded; 0 when every row was.",
		}),
		last: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "credbroker_audit_forward_last_success_timestamp_seconds",
			Help: "When the fleet store last committed a batch (Unix time).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.rows, m.duplicates, m.batches, m.failures, m.lost, m.rewinds, m.lagRows, m.lagSeconds, m.last)
	}
	return m
}
