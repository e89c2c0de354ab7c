//go:build !linux

package main

import "syscall"

// childProcAttr: only Linux can tie COMMAND's life to exec's.
func childProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }
