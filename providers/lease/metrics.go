package lease

import "github.com/prometheus/client_golang/prometheus"

// metrics are the manager's Prometheus metrics, labelled by credential
// name (a configured, bounded set).
type metrics struct {
	requests    *prometheus.CounterVec // credential, result: hit | miss
	events      *prometheus.CounterVec // credential, event: issue | refresh | renew
	failures    *prometheus.CounterVec // credential: issues or refreshes the provider failed
	revocations *prometheus.CounterVec // result: ok | failed
	outstanding *prometheus.GaugeVec   // state: active | revoke | revoked
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credbroker_lease_requests_total",
			Help: "Requests for minted credentials, by credential and result: hit (served from the cache at once) or miss (waited for an upstream issue, its own or one under way).",
		}, []string{"credential", "result"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credbroker_lease_events_total",
			Help: "Leases issued, refreshed ahead of expiry, or renewed, by credential and event.",
		}, []string{"credential", "event"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credbroker_lease_provider_failures_total",
			Help: "Issues and refreshes that failed upstream, by credential.",
		}, []string{"credential"}),
		revocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credbroker_lease_revocations_total",
			Help: "Revocation attempts, by result (ok, failed).",
		}, []string{"result"}),
		outstanding: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "credbroker_leases",
			Help: "Leases in the lease store, by state: active (revoked at expiry), revoke (revocation due or being retried), revoked (done upstream, audit row pending).",
		}, []string{"state"}),
	}
	m.revocations.WithLabelValues("ok")
	m.revocations.WithLabelValues("failed")
	for _, s := range []string{stateActive, stateRevoke, stateRevoked} {
		m.outstanding.WithLabelValues(s)
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.events, m.failures, m.revocations, m.outstanding)
	}
	return m
}

// credentialMetrics are one credential's counters, resolved once.
type credentialMetrics struct {
	hit, miss             prometheus.Counter
	issue, refresh, renew prometheus.Counter
	failure               prometheus.Counter
}

func (m *metrics) forCredential(name string) credentialMetrics {
	return credentialMetrics{
		hit: m.requests.WithLabelValues(name, "hit"), miss: m.requests.WithLabelValues(name, "miss"),
		issue: m.events.WithLabelValues(name, "issue"), refresh: m.events.WithLabelValues(name, "refresh"),
		renew: m.events.WithLabelValues(name, "renew"), failure: m.failures.WithLabelValues(name),
	}
}
