package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// ambientToken reads the token file of a per-pod sidecar, re-reading it
// when it changes: kubelet rotates projected tokens by replacing the file.
type ambientToken struct {
	path string

	mu    sync.Mutex
	mtime time.Time
	size  int64
	token string
}

// Token returns the file's current token.
func (a *ambientToken) Token() (string, error) {
	fi, err := os.Stat(a.path)
	if err != nil {
		return "", fmt.Errorf("ambient token: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.token != "" && fi.ModTime().Equal(a.mtime) && fi.Size() == a.size {
		return a.token, nil
	}
	b, err := os.ReadFile(a.path)
	if err != nil {
		return "", fmt.Errorf("ambient token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", errors.New("ambient token: the file is empty")
	}
	a.token, a.mtime, a.size = tok, fi.ModTime(), fi.Size()
	return tok, nil
}
