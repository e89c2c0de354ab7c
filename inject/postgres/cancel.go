package postgres

import (
	"context"
	"crypto/rand"
	"io"
	"sync"

	"github.com/jackc/pgx/v5/pgproto3"
)

// clientKey is a cancel key the listener handed to a client: the upstream
// backend's process id and a secret the broker drew.
type clientKey struct {
	pid    uint32
	secret [4]byte
}

// cancelTarget is where a client's cancel request goes: the upstream
// address the session's connection went to, and the upstream's own key.
type cancelTarget struct {
	addr   string
	pid    uint32
	secret []byte
}

// keys maps the cancel keys of the sessions in progress to their
// upstream's.
type keys struct {
	mu sync.Mutex
	m  map[clientKey]cancelTarget
}

// add registers t and returns the client's key for it: the upstream's
// process id (what pg_backend_pid() and notifications show the client)
// with a fresh random secret, unique among the sessions in progress.
func (k *keys) add(t cancelTarget) clientKey {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.m == nil {
		k.m = map[clientKey]cancelTarget{}
	}
	for {
		c := clientKey{pid: t.pid}
		_, _ = rand.Read(c.secret[:])
		if _, taken := k.m[c]; !taken {
			k.m[c] = t
			return c
		}
	}
}

// remove forgets a session's key.
func (k *keys) remove(c clientKey) {
	k.mu.Lock()
	delete(k.m, c)
	k.mu.Unlock()
}

// lookup finds the target of a cancel request's key.
func (k *keys) lookup(pid uint32, secret []byte) (cancelTarget, bool) {
	if len(secret) != 4 {
		return cancelTarget{}, false
	}
	c := clientKey{pid: pid}
	copy(c.secret[:], secret)
	k.mu.Lock()
	defer k.mu.Unlock()
	t, ok := k.m[c]
	return t, ok
}

// cancel passes a client's cancel request on to the upstream backend its
// key names, on a new connection (TLS per tls.mode) to the address the
// session went to, and waits for the server to close it, as libpq does.
// A key the listener did not hand out, or whose session has ended, is
// ignored, as PostgreSQL ignores it: the client learns nothing either way.
func (l *Listener) cancel(ctx context.Context, p *packet) {
	t, ok := l.keys.lookup(p.pid, p.secret)
	if !ok {
		l.log.Debug("postgres: cancel request with an unknown key ignored", keyPID, p.pid)
		return
	}
	ctx, stop := context.WithTimeout(ctx, CancelTimeout)
	defer stop()
	up, err := l.dial(ctx, t.addr)
	if err != nil {
		l.log.Warn("postgres: cancel request not passed on: the upstream is unreachable", keyUpstream, t.addr, keyPID, t.pid, keyError, err)
		return
	}
	defer up.conn.Close()
	req, _ := (&pgproto3.CancelRequest{ProcessID: t.pid, SecretKey: t.secret}).Encode(nil)
	if _, err := up.conn.Write(req); err != nil {
		l.log.Warn("postgres: cancel request not passed on", keyUpstream, t.addr, keyPID, t.pid, keyError, err)
		return
	}
	_, _ = io.Copy(io.Discard, up.conn) // the server closes once it has the request
	l.log.Debug("postgres: cancel request passed on", keyUpstream, t.addr, keyPID, t.pid)
}
