package main

import "syscall"

// childProcAttr has the kernel send COMMAND SIGTERM should exec die
// without stopping it (SIGKILL, a crash), so that no application outlives
// the exec that keeps its credentials fresh.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
