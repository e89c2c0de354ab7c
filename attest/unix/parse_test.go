package unix

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
)

const (
	testUID      = "1b2c3d4e-5f60-4a1b-8c9d-0e1f2a3b4c5d"
	testUIDUnder = "1b2c3d4e_5f60_4a1b_8c9d_0e1f2a3b4c5d"
	testStatic   = "6d1a7fd4c1b3e2f0a9b8c7d6e5f40312"
	testCtr      = "3f1e5a7c9b2d4f6081a3c5e7092b4d6f8a0c2e4f6b8d0a2c4e6f8b0d2a4c6e8f"
	testCtr2     = "0000000000000000000000000000000000000000000000000000000000000001"
)

var cgroupTests = []struct {
	name     string
	in       string
	pod, ctr string
	err      error
}{
	{
		name: "v2 systemd containerd burstable",
		in:   "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + testUIDUnder + ".slice/cri-containerd-" + testCtr + ".scope\n",
		pod:  testUID, ctr: testCtr,
	},
	{
		name: "v2 systemd containerd guaranteed",
		in:   "0::/kubepods.slice/kubepods-pod" + testUIDUnder + ".slice/cri-containerd-" + testCtr + ".scope\n",
		pod:  testUID, ctr: testCtr,
	},
	{
		name: "v2 systemd crio besteffort",
		in:   "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + testUIDUnder + ".slice/crio-" + testCtr + ".scope\n",
		pod:  testUID, ctr: testCtr,
	},
	{
		name: "crio conmon is not the container",
		in:   "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + testUIDUnder + ".slice/crio-conmon-" + testCtr + ".scope\n",
		pod:  testUID,
	},
	{
		name: "v1 cgroupfs besteffort",
		in: "12:memory:/kubepods/besteffort/pod" + testUID + "/" + testCtr + "\n" +
			"11:cpu,cpuacct:/kubepods/besteffort/pod" + testUID + "/" + testCtr + "\n" +
			"1:name=systemd:/kubepods/besteffort/pod" + testUID + "/" + testCtr + "\n",
		pod: testUID, ctr: testCtr,
	},
	{
		name: "v1 with root-only hierarchies",
		in: "13:misc:/\n" +
			"12:memory:/kubepods/burstable/pod" + testUID + "/" + testCtr + "\n" +
			"0::/\n",
		pod: testUID, ctr: testCtr,
	},
	{
		name: "v1 guaranteed cgroupfs",
		in:   "4:pids:/kubepods/pod" + testUID + "/" + testCtr + "\n",
		pod:  testUID, ctr: testCtr,
	},
	{
		name: "pod level only",
		in:   "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + testUIDUnder + ".slice\n",
		pod:  testUID,
	},
	{
		name: "nested cgroup inside the container",
		in:   "0::/kubepods/burstable/pod" + testUID + "/" + testCtr + "/init.scope\n",
		pod:  testUID, ctr: testCtr,
	},
	{
		name: "static pod uid",
		in:   "0::/kubepods/besteffort/pod" + testStatic + "/" + testCtr + "\n",
		pod:  testStatic, ctr: testCtr,
	},
	{
		name: "docker cgroupfs",
		in:   "0::/docker/" + testCtr + "\n",
		ctr:  testCtr,
	},
	{
		name: "docker systemd",
		in:   "0::/system.slice/docker-" + testCtr + ".scope\n",
		ctr:  testCtr,
	},
	{
		name: "ecs",
		in:   "5:cpu:/ecs/6f2a0b6c5e1d4b7f9a3c2e1d0f4b5a6c/" + testCtr + "\n",
		ctr:  testCtr,
	},
	{
		name: "sibling container seen from a private cgroup namespace",
		in:   "0::/../cri-containerd-" + testCtr + ".scope\n",
		ctr:  testCtr,
	},
	{
		name: "two levels up is not trusted",
		in:   "0::/../../cri-containerd-" + testCtr + ".scope\n",
	},
	{
		name: "host session",
		in:   "0::/user.slice/user-1000.slice/session-3.scope\n",
	},
	{
		name: "kubepods layout inside a delegated user subtree is ignored",
		in:   "0::/user.slice/user-1000.slice/user@1000.service/app.slice/kubepods-pod" + testUIDUnder + ".slice/cri-containerd-" + testCtr + ".scope\n",
	},
	{
		name: "docker layout under a user slice is ignored",
		in:   "0::/user.slice/docker/" + testCtr + "\n",
	},
	{
		name: "uppercase uid rejected",
		in:   "0::/kubepods/besteffort/pod" + strings.ToUpper(testUID) + "/" + testCtr + "\n",
	},
	{
		name: "cgroupfs uid with underscores rejected",
		in:   "0::/kubepods/besteffort/pod" + testUIDUnder + "/" + testCtr + "\n",
	},
	{
		name: "systemd uid with dashes rejected",
		in:   "0::/kubepods.slice/kubepods-pod" + testUID + ".slice\n",
	},
	{
		name: "short container id",
		in:   "0::/kubepods/besteffort/pod" + testUID + "/" + testCtr[:63] + "\n",
		pod:  testUID,
	},
	{
		name: "colon in path",
		in:   "1:name=systemd:/weird:path\n0::/kubepods/pod" + testUID + "/" + testCtr + "\n",
		pod:  testUID, ctr: testCtr,
	},
	{
		name: "no trailing newline",
		in:   "0::/kubepods/pod" + testUID,
		pod:  testUID,
	},
	{
		name: "conflicting containers",
		in:   "12:memory:/kubepods/pod" + testUID + "/" + testCtr + "\n11:cpu:/kubepods/pod" + testUID + "/" + testCtr2 + "\n",
		err:  errCgroupConflict,
	},
	{
		name: "conflicting pods",
		in:   "12:memory:/kubepods/pod" + testUID + "\n11:cpu:/kubepods/pod" + testStatic + "\n",
		err:  errCgroupConflict,
	},
	{name: "empty", in: ""},
	{name: "garbage", in: "no colons here\n::\n:\n0:\n"},
	{name: "relative path", in: "0::kubepods/pod" + testUID + "\n"},
}

func TestParseCgroup(t *testing.T) {
	for _, tt := range cgroupTests {
		t.Run(tt.name, func(t *testing.T) {
			pod, ctr, err := parseCgroup([]byte(tt.in))
			if !errors.Is(err, tt.err) {
				t.Fatalf("error = %v, want %v", err, tt.err)
			}
			if pod != tt.pod || ctr != tt.ctr {
				t.Errorf("parseCgroup = (%q, %q), want (%q, %q)", pod, ctr, tt.pod, tt.ctr)
			}
		})
	}
}

func FuzzParseCgroup(f *testing.F) {
	for _, tt := range cgroupTests {
		f.Add([]byte(tt.in))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		pod, ctr, err := parseCgroup(in)
		if err != nil {
			if pod != "" || ctr != "" {
				t.Fatalf("error %v with results (%q, %q)", err, pod, ctr)
			}
			return
		}
		if pod != "" {
			if _, ok := podUID([]byte(pod), false); !ok {
				t.Fatalf("pod uid %q is not canonical", pod)
			}
		}
		if ctr != "" {
			if _, ok := hex64([]byte(ctr)); !ok {
				t.Fatalf("container id %q is not 64 hex digits", ctr)
			}
		}
		// A result is always found verbatim (pod uid up to '_' vs '-') in the input.
		if pod != "" && !bytes.Contains(in, []byte(pod)) && !bytes.Contains(in, []byte(strings.ReplaceAll(pod, "-", "_"))) {
			t.Fatalf("pod uid %q not in input", pod)
		}
		if ctr != "" && !bytes.Contains(in, []byte(ctr)) {
			t.Fatalf("container id %q not in input", ctr)
		}
	})
}

// statLine builds a /proc/PID/stat line with the given comm and starttime.
func statLine(comm string, start uint64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "4242 (%s) S", comm)
	for field := 4; field <= 52; field++ {
		switch field {
		case statStartTimeField:
			fmt.Fprintf(&b, " %d", start)
		default:
			fmt.Fprintf(&b, " %d", field*3)
		}
	}
	b.WriteByte('\n')
	return b.String()
}

var statTests = []struct {
	name string
	comm string // when in is empty, in = statLine(comm, want)
	in   string
	want uint64
	ok   bool
}{
	{name: "plain", comm: "bash", want: 123456, ok: true},
	{name: "spaces in comm", comm: "my prog 1", want: 99, ok: true},
	{name: "parentheses in comm", comm: "a) b) (c", want: 7, ok: true},
	{name: "comm looks like fields", comm: ") S 1 2 3 4 5 6", want: 8, ok: true},
	{name: "newline in comm", comm: "a\nb)", want: 11, ok: true},
	{name: "empty comm", comm: "", want: 0, ok: true},
	{name: "max uint64", comm: "x", want: 1<<64 - 1, ok: true},
	{name: "kernel 2.6 length", in: "1 (init) S 0 1 1 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 42\n", want: 42, ok: true},
	{name: "truncated", in: "1 (init) S 0 1 1 0 -1 4194560 1 2\n"},
	{name: "no parentheses", in: "1 init S 0 1 1 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 42\n"},
	{name: "non numeric start", in: "1 (init) S 0 1 1 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 4x2\n"},
	{name: "overflow", in: "1 (init) S 0 1 1 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 18446744073709551616\n"},
	{name: "double space", in: "1 (init) S  0 1 1 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 42\n"},
	{name: "close before open", in: ") 1 (init S 0 1 1 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 42\n"},
	{name: "empty", in: ""},
}

func TestParseStartTime(t *testing.T) {
	for _, tt := range statTests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.in
			if in == "" && tt.ok {
				in = statLine(tt.comm, tt.want)
			}
			got, err := parseStartTime([]byte(in))
			if (err == nil) != tt.ok {
				t.Fatalf("parseStartTime(%q) error = %v, want ok=%v", in, err, tt.ok)
			}
			if tt.ok && got != tt.want {
				t.Errorf("parseStartTime(%q) = %d, want %d", in, got, tt.want)
			}
		})
	}
}

// FuzzParseStartTime checks the parser on arbitrary input against a simple
// oracle, and on well-formed lines with an arbitrary comm.
func FuzzParseStartTime(f *testing.F) {
	for _, tt := range statTests {
		in := tt.in
		if in == "" && tt.ok {
			in = statLine(tt.comm, tt.want)
		}
		f.Add(tt.comm, tt.want, []byte(in))
	}
	f.Fuzz(func(t *testing.T, comm string, start uint64, in []byte) {
		if got, err := parseStartTime(in); err == nil {
			// Oracle: the 20th space-separated field after the last ')'.
			rest := in[bytes.LastIndexByte(in, ')')+1:]
			fields := bytes.FieldsFunc(rest, func(r rune) bool { return r == ' ' || r == '\n' })
			if len(fields) < statStartTimeField-2 {
				t.Fatalf("parsed %d from %q with only %d fields", got, in, len(fields))
			}
			want, perr := strconv.ParseUint(string(fields[statStartTimeField-3]), 10, 64)
			if perr != nil || want != got {
				t.Fatalf("parseStartTime(%q) = %d, oracle %d (%v)", in, got, want, perr)
			}
		}
		// The kernel's comm is at most 15 bytes and has no NUL.
		if len(comm) > 15 || strings.IndexByte(comm, 0) >= 0 {
			return
		}
		line := statLine(comm, start)
		got, err := parseStartTime([]byte(line))
		if err != nil || got != start {
			t.Fatalf("parseStartTime(%q) = %d, %v; want %d", line, got, err, start)
		}
	})
}

func TestHashCacheEvicts(t *testing.T) {
	c := newHashCache(2)
	ids := []fileID{{ino: 1}, {ino: 2}, {ino: 3}}
	c.put(ids[0], "a")
	c.put(ids[1], "b")
	if _, ok := c.get(ids[0]); !ok { // ids[0] becomes most recent
		t.Fatal("entry 0 missing")
	}
	c.put(ids[2], "c") // evicts ids[1]
	if c.len() != 2 {
		t.Fatalf("len = %d, want 2", c.len())
	}
	if _, ok := c.get(ids[1]); ok {
		t.Error("least recently used entry 1 was not evicted")
	}
	for i, want := range map[int]string{0: "a", 2: "c"} {
		if got, ok := c.get(ids[i]); !ok || got != want {
			t.Errorf("get(%d) = %q, %v; want %q", i, got, ok, want)
		}
	}
	c.put(ids[2], "c2")
	if got, _ := c.get(ids[2]); got != "c2" || c.len() != 2 {
		t.Errorf("update: got %q, len %d", got, c.len())
	}
}

func TestConfigValidate(t *testing.T) {
	err := Config{ProcRoot: "proc", HashCacheSize: -1}.Validate()
	if err == nil {
		t.Fatal("Validate accepted a relative proc root and a negative cache size")
	}
	for _, want := range []string{"unix: proc_root", "unix: hash_cache_size"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if err := (Config{}).Validate(); err != nil {
		t.Errorf("zero Config: %v", err)
	}
	c := Config{}.withDefaults()
	if c.ProcRoot != DefaultProcRoot || c.HashCacheSize != DefaultHashCacheSize || c.Logger == nil {
		t.Errorf("defaults not applied: %+v", c)
	}
}
