package main

import (
	"runtime"
	"syscall"
	"time"
)

// prSetTimerSlack is prctl's PR_SET_TIMERSLACK.
const prSetTimerSlack = 29

// lockPreciseThread gives the calling goroutine an OS thread of its own
// whose sleeps are not rounded up. The goroutine must not unlock it: the
// thread then exits with the goroutine, and its timer slack with it.
//
// The open-loop scheduler needs this because the Go runtime rounds timers
// under a millisecond up to a whole millisecond when it has nothing else
// to do (epoll_wait takes milliseconds), which would send requests in
// bursts and charge the wait to the server.
func lockPreciseThread() {
	runtime.LockOSThread()
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerSlack, 1, 0)
}

// preciseSleep sleeps for d with nanosleep(2) on the current thread.
func preciseSleep(d time.Duration) {
	if d <= 0 {
		return
	}
	ts := syscall.NsecToTimespec(int64(d))
	for syscall.Nanosleep(&ts, &ts) == syscall.EINTR {
	}
}
