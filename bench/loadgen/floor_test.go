package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

// measureFloor runs cfg until its window counted a record, up to hangBound:
// a loaded machine may not run the writer inside a short window at all.
func measureFloor(t *testing.T, cfg FloorConfig) *Result {
	t.Helper()
	deadline := time.Now().Add(hangBound)
	for {
		res, err := runFloor(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		if res.OK > 0 {
			return res
		}
		if time.Now().After(deadline) {
			t.Fatalf("no run measured a record in %v; the last: %+v", hangBound, res)
		}
		t.Logf("the window measured nothing (a loaded machine?), running again: %s", formatLine(res))
	}
}

// assertEmpty fails unless dir holds nothing: the floor removed its file.
func assertEmpty(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("left behind in %s: %s", dir, e.Name())
	}
}

func TestFsyncFloor(t *testing.T) {
	for _, sync := range []string{"fsync", "fdatasync"} {
		t.Run(sync+" closed", func(t *testing.T) {
			dir := t.TempDir()
			// A small file, so that the writes wrap around in it.
			res := measureFloor(t, FloorConfig{Dir: dir, Duration: 50 * time.Millisecond, Records: Records{Sync: sync, Prealloc: 3 * defaultWriteSize}})
			t.Log(formatLine(res))
			assertEmpty(t, dir)
			if res.Mode != "closed" || res.Clients != 1 || res.Label != "fsync" || res.Sync != sync || res.WriteSize != defaultWriteSize {
				t.Fatalf("result %+v: want closed loop, 1 client, label fsync, %s of %d bytes", res, sync, defaultWriteSize)
			}
			if res.Syncs != res.OK || res.Errors != 0 || res.TotalRequests < res.OK {
				t.Fatalf("ok=%d syncs=%d errors=%d total=%d: want one sync per record, no errors", res.OK, res.Syncs, res.Errors, res.TotalRequests)
			}
			if !(0 < res.P50ms && res.P50ms <= res.P99ms && res.P99ms <= res.MaxMs) || res.RPS <= 0 {
				t.Fatalf("figures out of order: %+v", res)
			}
		})
	}

	t.Run("open", func(t *testing.T) {
		dir := t.TempDir()
		cfg := FloorConfig{Dir: dir, Rate: 400, Warmup: 10 * time.Millisecond, Duration: 100 * time.Millisecond, Late: time.Millisecond, Label: "floor0"}
		res, err := runFloor(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Log(formatLine(res))
		assertEmpty(t, dir)
		// Every record scheduled in the window is committed, however late:
		// 40 of them on any machine, in 1 to 40 writes and syncs.
		if res.Mode != "open" || res.Rate != 400 || res.OK != 40 || res.TotalRequests != 44 || res.Syncs < 1 || res.Syncs > res.OK || res.Label != "floor0" {
			t.Fatalf("result %+v: want open loop at 400/s, 40 records of 44 scheduled, 1 to 40 syncs", res)
		}
	})

	t.Run("json", func(t *testing.T) {
		dir := t.TempDir()
		var out, errOut bytes.Buffer
		args := []string{"-fsync-floor", dir, "-d", "20ms", "-warmup", "0s", "-rate", "100", "-write-size", "512", "-label", "fsync", "-json"}
		if err := mainErr(t.Context(), args, &out, &errOut); err != nil {
			t.Fatal(err)
		}
		assertEmpty(t, dir)
		var m map[string]any
		if err := json.Unmarshal(out.Bytes(), &m); err != nil {
			t.Fatalf("%v: %s", err, out.String())
		}
		for _, k := range []string{"label", "mode", "ok", "p50_ms", "p99_ms", "rps", "server_cpu_us_per_req", "sync", "write_size", "syncs"} {
			if _, ok := m[k]; !ok {
				t.Errorf("JSON lacks %q: %s", k, out.String())
			}
		}
		if m["mode"] != "open" || m["ok"] != 2.0 || m["write_size"] != 512.0 || !strings.Contains(errOut.String(), "fsync 512-byte writes") {
			t.Errorf("JSON %s, text %s", out.String(), errOut.String())
		}
	})

	t.Run("refused", func(t *testing.T) {
		dir := t.TempDir()
		for _, args := range [][]string{
			{"-fsync-floor", dir, "-c", "2"},
			{"-fsync-floor", dir, "-socket", "/tmp/x.sock"},
			{"-fsync-floor", dir, "-sync", "none"},
			{"-fsync-floor", dir, "-write-size", "0"},
			{"-fsync-floor", dir, "-write-size", "8192", "-prealloc", "4096"},
			{"-fsync-floor", dir + "/missing"},
		} {
			if err := mainErr(t.Context(), append(args, "-d", "10ms"), new(bytes.Buffer), new(bytes.Buffer)); err == nil {
				t.Errorf("%q: no error", args)
			}
		}
		assertEmpty(t, dir)
	})
}
