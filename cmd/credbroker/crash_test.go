package main

import (
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestCrashSafety SIGKILLs a loaded broker at random moments, many times,
// restarting it on the same database each time. Every credential a client
// received must have its committed audit row, and the chain must verify.
func TestCrashSafety(t *testing.T) {
	e := newEnv(t, e2ePolicies, e2eCredentials())
	e.write("secrets/demo", "s3cr3t")
	const rounds, clients = 20, 8

	var mu sync.Mutex
	received := map[string]bool{}
	for round := 0; round < rounds; round++ {
		b := e.start()
		c := socketClient(e.socket)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					id, ok := tryGet(ctx, c)
					if ok {
						mu.Lock()
						received[id] = true
						mu.Unlock()
					}
				}
			}()
		}
		time.Sleep(time.Duration(30+rand.IntN(250)) * time.Millisecond)
		if err := b.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-b.done
		cancel()
		wg.Wait()
	}
	if len(received) < rounds {
		t.Fatalf("only %d credentials received over %d rounds; the load did not run", len(received), rounds)
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
