package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"
)

// userHZ is the unit of the CPU times in /proc/PID/stat. Linux fixes it at
// 100 for user space on every architecture Go supports.
const userHZ = 100

// procCPU returns the user plus system CPU time consumed so far by process
// pid ("self" for this one), all threads included, from /proc/PID/stat.
func procCPU(pid string) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, fmt.Errorf("cpu time: %w", err)
	}
	// The command name (field 2) may hold spaces; fields after it are
	// plain. After the closing parenthesis: state is field 3, utime 14, stime 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("cpu time: malformed /proc/" + pid + "/stat")
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 13 {
		return 0, errors.New("cpu time: short /proc/" + pid + "/stat")
	}
	utime, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	stime, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("cpu time: %w", err)
	}
	return time.Duration(utime+stime) * time.Second / userHZ, nil
}

// procMem returns VmRSS and VmHWM (peak RSS) of process pid in KiB, from
// /proc/PID/status.
func procMem(pid string) (rssKB, hwmKB int64, err error) {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0, 0, fmt.Errorf("memory: %w", err)
	}
	var found int
	for line := range bytes.Lines(b) {
		var dst *int64
		switch {
		case bytes.HasPrefix(line, []byte("VmRSS:")):
			dst = &rssKB
		case bytes.HasPrefix(line, []byte("VmHWM:")):
			dst = &hwmKB
		default:
			continue
		}
		f := bytes.Fields(line)
		if len(f) < 2 {
			return 0, 0, fmt.Errorf("memory: malformed line %q", line)
		}
		if *dst, err = strconv.ParseInt(string(f[1]), 10, 64); err != nil {
			return 0, 0, fmt.Errorf("memory: %w", err)
		}
		found++
	}
	if found != 2 {
		return 0, 0, errors.New("memory: no VmRSS/VmHWM in /proc/" + pid + "/status")
	}
	return rssKB, hwmKB, nil
}
