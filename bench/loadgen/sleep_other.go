//go:build !linux

package main

import "time"

func lockPreciseThread() {}

func preciseSleep(d time.Duration) { time.Sleep(d) }
