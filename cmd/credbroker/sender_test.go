package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Helper processes of the sender tests: the test binary re-executed with
// envSenderHelper set runs senderHelper instead of the tests.
const (
	envSenderHelper = "CREDBROKER_E2E_SENDER" // fork-exec | exec | write-head | setuid
	envSenderSocket = "CREDBROKER_E2E_SOCKET"
	envSenderTail   = "CREDBROKER_E2E_TAIL" // file holding the request's last bytes
)

// requestHead is a socket API request for "pinned" without its final empty
// line: the broker handles it only once someone writes "\r\n".
const requestHead = "GET /v1/credentials/pinned HTTP/1.1\r\nHost: credbroker\r\nCredbroker-Request: 1\r\n"

// senderHelper is the body of the helper processes; it returns the exit
// code.
func senderHelper(mode string) int {
	if err := runSenderHelper(mode); err != nil {
		fmt.Fprintln(os.Stderr, "sender helper:", err)
		return 2
	}
	return 0
}

func runSenderHelper(mode string) error {
	if mode == "write-head" {
		// Write the head of a request on the connection passed as fd 3.
		_, err := os.NewFile(3, "conn").Write([]byte(requestHead))
		return err
	}
	c, err := net.Dial("unix", os.Getenv(envSenderSocket))
	if err != nil {
		return err
	}
	conn := c.(*net.UnixConn)
	f, err := conn.File() // a blocking, inheritable duplicate
	if err != nil {
		return err
	}
	switch mode {
	case "setuid":
		// Connected as root; now drop to nobody and ask.
		if err := syscall.Setuid(65534); err != nil {
			return err
		}
		status, err := roundTrip(conn, "GET /v1/credentials/pinned HTTP/1.1\r\nHost: credbroker\r\nCredbroker-Request: 1\r\n\r\n")
		fmt.Println(status)
		return err
	case "fork-exec":
		// A child of ours writes the head of the request on our
		// connection, then we become the pinned program, which writes the
		// rest.
		child := exec.Command(os.Args[0])
		child.Env = append(os.Environ(), envSenderHelper+"=write-head")
		child.ExtraFiles = []*os.File{f}
		child.Stderr = os.Stderr
		if err := child.Run(); err != nil {
			return fmt.Errorf("child: %w", err)
		}
	case "exec":
		// One request of our own shows the broker has accepted the
		// connection; then we write the head of a second and become the
		// pinned program, which writes the rest.
		status, err := roundTrip(conn, "GET /v1/credentials/pinned HTTP/1.1\r\nHost: credbroker\r\nCredbroker-Request: 1\r\n\r\n")
		if err != nil {
			return err
		}
		if !strings.Contains(status, " 403 ") {
			return fmt.Errorf("first request: %q, want 403 (this helper is not the pinned program)", status)
		}
		if _, err := conn.Write([]byte(requestHead)); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unknown helper %q", mode)
	}
	// Become cat, writing the tail to the connection (stdout) and then
	// waiting on stdin, a pipe the test holds.
	if err := syscall.Dup2(int(f.Fd()), 1); err != nil {
		return err
	}
	cat, err := exec.LookPath("cat")
	if err != nil {
		return err
	}
	return syscall.Exec(cat, []string{"cat", os.Getenv(envSenderTail), "-"}, os.Environ())
}

// roundTrip writes a raw request and returns the status line of the reply.
func roundTrip(conn net.Conn, req string) (string, error) {
	if _, err := conn.Write([]byte(req)); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return "", err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return "HTTP/1.1 " + resp.Status + " ", nil
}

// pinnedPolicies allow "pinned" to cat, by path and hash, and nothing else
// to anyone.
func pinnedPolicies(t *testing.T) (policies, cat string) {
	t.Helper()
	cat, err := exec.LookPath("cat")
	if err != nil {
		t.Fatal(err)
	}
	if cat, err = filepath.EvalSymlinks(cat); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(cat)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return fmt.Sprintf(`policies:
  - name: pinned-cat
    effect: allow
    workloads: [{unix: {exe: %q, exe_sha256: %s}}]
    credentials: [pinned]
`, cat, hex.EncodeToString(sum[:])), cat
}

// TestSenderIsAttested: the process that wrote a request is the one
// attested. A connection handed to a child, or kept across an exec of the
// pinned program, does not get the pinned program's credential; a
// connection used after dropping root is attested as the new uid.
func TestSenderIsAttested(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test needs root, for a helper that drops to another uid")
	}
	policies, cat := pinnedPolicies(t)
	e := newEnv(t, policies, `  - {name: pinned, static: {file: secrets/demo}}
`)
	e.write("secrets/demo", "pinned-secret\n")
	tail := e.write("tail", "\r\n")
	b := e.start()

	tests := []struct {
		mode   string
		reason string
	}{
		{"fork-exec", "the request was not written by the process that opened the connection"},
		{"exec", "the peer process has executed another program since it connected"},
	}
	for _, tc := range tests {
		t.Run(tc.mode, func(t *testing.T) {
			stdin, hold, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer hold.Close()
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), envSenderHelper+"="+tc.mode, envSenderSocket+"="+e.socket, envSenderTail+"="+tail)
			cmd.Stdin, cmd.Stderr = stdin, os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			stdin.Close()
			defer func() { hold.Close(); cmd.Process.Kill(); cmd.Wait() }()
			// The decision on the completed request is recorded: wait for
			// its row.
			var row auditRow
			deadline := time.Now().Add(hangBound)
			for {
				rows := auditRows(t, e.db)
				for _, r := range rows {
					if r.Credential == "pinned" && r.PeerPID == int64(cmd.Process.Pid) && r.Decision != "deny" {
						row = r
					}
				}
				if row.DecisionID != "" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no decision recorded for the helper:\n%s", b.logs)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", cmd.Process.Pid)); exe != cat {
				t.Fatalf("the helper is %q, not the pinned %q: it did not exec", exe, cat)
			}
			if row.Decision != "error" || row.Reason != "unix: "+tc.reason {
				t.Fatalf("audit row: %s by %s (%s), want a refusal: %s", row.Decision, row.Subject, row.Reason, tc.reason)
			}
		})
	}

	t.Run("setuid", func(t *testing.T) {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), envSenderHelper+"=setuid", envSenderSocket+"="+e.socket)
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), " 403 ") {
			t.Fatalf("reply %q, want 403", out)
		}
		for _, r := range auditRows(t, e.db) {
			if r.PeerPID == int64(cmd.Process.Pid) && r.Subject != "unix:uid:65534" {
				t.Errorf("audit row: %s by %s, want the sender's uid 65534", r.Decision, r.Subject)
			}
		}
	})
}

// TestUnchangedClients: curl, Go's and Python's HTTP clients and
// credbroker get are served as before.
func TestUnchangedClients(t *testing.T) {
	e := newEnv(t, e2ePolicies, e2eCredentials())
	e.write("secrets/demo", "demo-secret\n")
	e.start()
	want := "demo-secret"

	out, err := exec.Command("curl", "-sS", "--unix-socket", e.socket, "-H", "Credbroker-Request: 1", "http://credbroker/v1/credentials/demo").CombinedOutput()
	if err != nil || !strings.Contains(string(out), want) {
		t.Errorf("curl: %s, %v", out, err)
	}

	c := socketClient(e.socket)
	for i := 0; i < 3; i++ { // one kept-alive connection
		if r := call(t, c, http.MethodGet, "/v1/credentials/demo", nil, nil); r.Status != http.StatusOK || r.OK.Data["value"] != want {
			t.Errorf("Go client: %d %s", r.Status, r.Body)
		}
	}

	py := `import http.client, socket, sys
class C(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(sys.argv[1])
c = C("credbroker")
for _ in range(2):
    c.request("POST", "/v1/credentials/demo", body=b"{}", headers={"Credbroker-Request": "1", "Content-Type": "application/json"})
    r = c.getresponse()
    print(r.status, r.read().decode())
`
	out, err = exec.Command("python3", "-c", py, e.socket).CombinedOutput()
	if err != nil || strings.Count(string(out), "200 ") != 2 || !strings.Contains(string(out), want) {
		t.Errorf("python: %s, %v", out, err)
	}

	stdout, stderr, code := credbroker(t, "get", "demo", "--socket", e.socket)
	if code != 0 || !strings.Contains(stdout, want) {
		t.Errorf("credbroker get: exit %d: %s %s", code, stdout, stderr)
	}
}
