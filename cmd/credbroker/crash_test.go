package main

import (
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestCrashSafety SIGKILLs a loaded broker many times, restarting it on the
// same database each time. Every credential a client received must have its
// committed audit row, and the chain must verify.
//
// A round ends on an event, never on a duration: it picks how many
// credentials to hand out (1 to 60) and kills the broker as soon as the
// clients have received that many, while the other clients' requests are in
// flight. A random number of yields before the kill moves where it lands
// among them. A slow machine makes a round longer, never emptier.
func TestCrashSafety(t *testing.T) {
	e := newEnv(t, e2ePolicies, e2eCredentials())
	e.write("secrets/demo", "s3cr3t")
	const rounds, clients, maxPerRound = 20, 8, 60

	var mu sync.Mutex
	received := map[string]bool{}
	for round := range rounds {
		k := 1 + rand.IntN(maxPerRound)
		got := crashRound(t, e, clients, k, func(id string) {
			mu.Lock()
			received[id] = true
			mu.Unlock()
		})
		t.Logf("round %d: killed after %d credentials, %d received in all", round, k, got)
	}
	rows := auditRows(t, e.db)
	missing := 0
	for id := range received {
		if rows[id].Decision != "allow" {
			missing++
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d received credentials have no audit row", missing, len(received))
	}
	if out, errOut, code := credbroker(t, "audit", "verify", "--db", e.db); code != 0 {
		t.Fatalf("audit verify after %d crashes: %s %s", rounds, out, errOut)
	}
	t.Logf("%d credentials received across %d SIGKILLs, all audited; %d rows in all", len(received), rounds, len(rows))
}

// crashRound starts the broker, runs clients against it until they have
// received k credentials, SIGKILLs it and returns how many credentials came
// back before it died; each one's decision id goes to record.
func crashRound(t *testing.T, e *env, clients, k int, record func(id string)) int64 {
	t.Helper()
	b := e.start()
	c := socketClient(e.socket)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	var got atomic.Int64
	reached := make(chan struct{})
	for range clients {
		wg.Go(func() {
			for ctx.Err() == nil {
				if id, ok := tryGet(ctx, c); ok {
					record(id)
					if got.Add(1) == int64(k) {
						close(reached)
					}
				}
			}
		})
	}
	select {
	case <-reached:
	case <-b.done:
		t.Fatalf("broker exited before it was killed, after %d of %d credentials:\n%s", got.Load(), k, b.logs)
	case <-time.After(hangBound):
		t.Fatalf("only %d of %d credentials received in %v:\n%s", got.Load(), k, hangBound, b.logs)
	}
	for range rand.IntN(64) {
		runtime.Gosched()
	}
	if err := b.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-b.done
	cancel()
	wg.Wait()
	return got.Load()
}

// tryGet fetches demo and returns the decision id when a credential came back.
func tryGet(ctx context.Context, c *http.Client) (string, bool) {
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://credbroker/v1/credentials/demo", nil)
	req.Header.Set("Credbroker-Request", "1")
	resp, err := c.Do(req)
	if err != nil {
		return "", false
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		return "", false
	}
	var r struct {
		DecisionID string            `json:"decision_id"`
		Data       map[string]string `json:"data"`
	}
	if json.Unmarshal(body, &r) != nil || r.Data["value"] == "" {
		return "", false
	}
	return r.DecisionID, true
}
