package awscreds_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/credbroker/credbroker/broker"
	"github.com/credbroker/credbroker/inject/awscreds"
	"github.com/credbroker/credbroker/inject/listener"
	awsprov "github.com/credbroker/credbroker/providers/aws"
)

// blockingDecider holds each decision until release is closed or the
// request's context ends; entered receives a value as a decision starts.
type blockingDecider struct {
	entered chan struct{}
	release chan struct{}
	grant   *broker.Grant
}

func (d *blockingDecider) Decide(ctx context.Context, _ *broker.Request) (*broker.Grant, error) {
	d.entered <- struct{}{}
	select {
	case <-d.release:
		return d.grant, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// startRun serves e on a loopback listener with Run; it returns the URL,
// the stop function and Run's result.
func startRun(t *testing.T, e *awscreds.Endpoint) (string, context.CancelFunc, chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	t.Cleanup(stop)
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx, ln) }()
	return "http://" + ln.Addr().String(), stop, done
}

// get fetches url with a token in the background; the response's status
// (or 0 on error) arrives on the channel.
func get(url string) chan int {
	out := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("Authorization", "tok")
		resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
		if err != nil {
			out <- 0
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		out <- resp.StatusCode
	}()
	return out
}

func TestRunDrains(t *testing.T) {
	full := map[string]string{awsprov.FieldAccessKeyID: "A", awsprov.FieldSecretAccessKey: "S", awsprov.FieldSessionToken: "T"}
	for _, tc := range []struct {
		name    string
		drain   time.Duration
		release bool // let the decision finish after Run was stopped
		status  int  // of the request in flight
		runErr  bool
	}{
		{"a request in flight finishes", time.Minute, true, 200, false},
		{"one outliving the drain timeout is cut", 50 * time.Millisecond, false, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &blockingDecider{entered: make(chan struct{}, 1), release: make(chan struct{}), grant: grant(full, time.Now().Add(time.Hour))}
			e, err := awscreds.New(awscreds.Config{Listen: "127.0.0.1:0", Credential: "s3", DrainTimeout: broker.DrainTimeout(tc.drain)}, d)
			if err != nil {
				t.Fatal(err)
			}
			url, stop, done := startRun(t, e)
			status := get(url + "/creds")
			<-d.entered
			stop()
			if tc.release {
				// Run does not return while the request is in flight.
				select {
				case err := <-done:
					t.Fatalf("Run returned %v with a request in flight", err)
				default:
				}
				close(d.release)
			}
			if got := <-status; got != tc.status {
				t.Errorf("the request in flight: status %d, want %d", got, tc.status)
			}
			if err := <-done; (err != nil) != tc.runErr {
				t.Errorf("Run: %v, want an error: %v", err, tc.runErr)
			}
			if _, err := net.Dial("tcp", url[len("http://"):]); err == nil {
				t.Error("the listener still accepts after Run returned")
			}
		})
	}
}

// TestNoGoroutineLeft: once Run has returned, no goroutine of the endpoint
// (server, connections, the connection limiter) is left.
func TestNoGoroutineLeft(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Run("serve", func(t *testing.T) {
		full := map[string]string{awsprov.FieldAccessKeyID: "A", awsprov.FieldSecretAccessKey: "S", awsprov.FieldSessionToken: "T"}
		e, err := awscreds.New(awscreds.Config{Listen: "127.0.0.1:0", Credential: "s3"}, fixedDecider{grant: grant(full, time.Now().Add(time.Hour))},
			listener.WithConnLimit(broker.LimitConfig{Name: "aws", Max: 2}))
		if err != nil {
			t.Fatal(err)
		}
		url, stop, done := startRun(t, e)
		for range 3 {
			if got := <-get(url + "/creds"); got != 200 {
				t.Fatalf("status %d", got)
			}
		}
		stop()
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines left, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		runtime.Gosched()
	}
}
