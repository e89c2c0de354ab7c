package broker

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	decisions     *prometheus.CounterVec
	latency       prometheus.Histogram
	auditFailures prometheus.Counter
	reloads       *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credbroker_decisions_total",
			Help: "Decisions made, by the channel the request came in on (socket, mtls, http, …) and result (allow, deny, error).",
		}, []string{"channel", "result"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "credbroker_decision_duration_seconds",
			Help:    "Time from request to committed audit record.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}),
		auditFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "credbroker_audit_failures_total",
			Help: "Decisions refused because the audit store failed to commit their record (not counting callers that went away first).",
		}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credbroker_policy_reloads_total",
			Help: "Policy reloads, by result (ok, error).",
		}, []string{"result"}),
	}
	for _, r := range []string{resultAllow, resultDeny, resultError} {
		m.decisions.WithLabelValues(ChannelSocket, r)
	}
	m.reloads.WithLabelValues("ok")
	m.reloads.WithLabelValues("error")
	if reg != nil {
		reg.MustRegister(m.decisions, m.latency, m.auditFailures, m.reloads)
	}
	return m
}
