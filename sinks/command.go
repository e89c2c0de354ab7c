package sinks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"time"
)

// Environment variables an on_change command gets beside the render
// process's own environment.
const (
	// EnvPath is the path of the file that changed.
	EnvPath = "CREDBROKER_SINK_PATH"
	// EnvCredential is the name of the credential it was rendered from.
	EnvCredential = "CREDBROKER_SINK_CREDENTIAL"
)

// DefaultCommandTimeout bounds an on_change command when
// Options.CommandTimeout is zero; a command still running then is killed.
const DefaultCommandTimeout = time.Minute

// commandWaitDelay is how long a killed command's output may still be
// copied before its pipes are closed.
const commandWaitDelay = 5 * time.Second

// runCommand runs a sink's on_change: no shell, stdin empty, stdout and
// stderr to out, the process's environment plus EnvPath and EnvCredential
// (never a value of the credential), killed after timeout or when ctx
// ends.
func runCommand(ctx context.Context, c *Config, out io.Writer, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.OnChange[0], c.OnChange[1:]...)
	cmd.Env = append(os.Environ(), EnvPath+"="+c.Path, EnvCredential+"="+c.Credential)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = commandWaitDelay
	err := cmd.Run()
	switch {
	case err == nil:
		return nil
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("on_change %s: killed after %v", c.OnChange[0], timeout)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return fmt.Errorf("on_change %s: %v", c.OnChange[0], ee.ProcessState)
	}
	return fmt.Errorf("on_change: %w", err)
}
