package httpproxy

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/credbroker/credbroker/broker"
)

// recordingDecider stands in for the broker to see what the proxy asks; it
// refuses everything.
type recordingDecider struct{ reqs chan *broker.Request }

func (d recordingDecider) Decide(_ context.Context, req *broker.Request) (*broker.Grant, error) {
	d.reqs <- req
	return nil, &broker.Error{Kind: broker.KindDenied, Message: "no"}
}

// TestAllowAmbient checks that allow_ambient reaches the broker as
// Request.AmbientIfNoPeer (the broker's TestAmbientIfNoPeer shows what it
// does), and is off by default.
func TestAllowAmbient(t *testing.T) {
	for _, allow := range []bool{false, true} {
		d := recordingDecider{reqs: make(chan *broker.Request, 1)}
		p, err := New(Config{Listen: "127.0.0.1:0", Upstream: "https://api.example.com", Credential: "partner-api", AllowAmbient: allow}, d)
		if err != nil {
			t.Fatal(err)
		}
		w := httptest.NewRecorder()
		p.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/v1/x", nil))
		if req := <-d.reqs; req.AmbientIfNoPeer != allow || w.Code != http.StatusForbidden {
			t.Errorf("allow_ambient %v: the broker was asked with AmbientIfNoPeer %v, status %d", allow, req.AmbientIfNoPeer, w.Code)
		}
	}
}
