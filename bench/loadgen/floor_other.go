//go:build !linux

package main

import (
	"fmt"
	"os"
	"time"
)

// syncFunc returns the call that makes a write durable: fsync only, here.
func syncFunc(name string) (func(*os.File) error, error) {
	if name == "fsync" {
		return (*os.File).Sync, nil
	}
	return nil, fmt.Errorf("-sync %s: only fsync on this system", name)
}

// selfCPU returns the CPU time this process has used, 0 when unknown.
func selfCPU() time.Duration {
	d, _ := procCPU("self")
	return d
}

func fsType(string) string { return "" }
