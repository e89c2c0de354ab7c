package broker

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Health reports whether a component is ready to serve; nil means ready.
type Health func() error

// AdminHandler serves /healthz (the process is up), /readyz (every check
// passes: the audit store is open and writable, the policy set in force
// has policies) and /metrics (Prometheus, from gatherer).
func AdminHandler(gatherer prometheus.Gatherer, ready map[string]Health) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		status, body := http.StatusOK, ""
		for name, check := range ready {
			if err := check(); err != nil {
				status = http.StatusServiceUnavailable
				body += name + ": " + err.Error() + "\n"
			}
		}
		if status == http.StatusOK {
			body = "ok\n"
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	return mux
}
