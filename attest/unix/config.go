package unix

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
)

// Claim names of a unix Identity.
const (
	ClaimUID         = "uid"          // int64, from SO_PEERCRED
	ClaimGID         = "gid"          // int64, from SO_PEERCRED
	ClaimPID         = "pid"          // int64, from SO_PEERCRED, in the broker's pid namespace
	ClaimExe         = "exe"          // string, the target of /proc/PID/exe
	ClaimExeSHA256   = "exe_sha256"   // string, lowercase hex SHA-256 of the executable
	ClaimPodUID      = "pod_uid"      // string, Kubernetes pod UID from the cgroup path, dashed
	ClaimContainerID = "container_id" // string, 64 lowercase hex digits from the cgroup path
)

// Defaults for Config fields left zero.
const (
	DefaultProcRoot      = "/proc"
	DefaultHashCacheSize = 1024
	// DefaultMaxExeBytes is larger than any real executable seen in
	// practice (statically linked toolchains and browsers stay well below
	// it), and hashing it takes well under a second.
	DefaultMaxExeBytes = 512 << 20
	// DefaultHashConcurrency is how many executables are hashed at once.
	DefaultHashConcurrency = 2
)

// Values of Config.TCPLookup.
const (
	TCPLookupAuto = "auto"
	TCPLookupBPF  = "bpf"
	TCPLookupProc = "proc"
)

// Log attribute keys.
const (
	logKeyMode      = "mode"
	logKeyPID       = "pid"
	logKeyUID       = "uid"
	logKeyReason    = "reason"
	logKeyError     = "error"
	logKeyTCPLookup = "tcp_lookup"
)

// Config configures an Attestor.
type Config struct {
	// ProcRoot is where procfs is mounted. Default "/proc".
	ProcRoot string
	// DisablePidfd forces the start-time fallback even when the kernel
	// supports SO_PEERPIDFD (Linux 6.5 and later). Default false. Meant for
	// tests; the fallback is used anyway on kernels without SO_PEERPIDFD.
	DisablePidfd bool
	// HashCacheSize bounds the number of executable hashes kept, keyed by
	// file identity. Default 1024; negative is an error.
	HashCacheSize int
	// MaxExeBytes is the largest executable hashed; a peer whose executable
	// is larger is refused with that reason rather than stalling its
	// request. Default DefaultMaxExeBytes (512 MiB); negative is an error.
	MaxExeBytes int64
	// HashConcurrency bounds how many executables are hashed at once (cache
	// misses); others wait, as long as their request lets them. Default
	// DefaultHashConcurrency; negative is an error.
	HashConcurrency int
	// TCPLookup is how AttestTCP finds the processes holding the client
	// socket of a TCP loopback connection: TCPLookupBPF with a BPF iterator
	// over every open file (needs CAP_BPF and CAP_PERFMON, and kernel BTF),
	// TCPLookupProc by reading /proc/*/fd, or TCPLookupAuto (the default,
	// "") for the iterator when it loads and /proc otherwise.
	TCPLookup string
	// Hooks are test seams; all are optional.
	Hooks Hooks
	// Logger receives the attestor's own logs. Default: discard.
	Logger *slog.Logger
}

// Hooks are functions the Attestor calls at fixed points, so tests can act
// inside an attestation. Production code leaves them nil.
type Hooks struct {
	// AfterPeerCred is called by Attest with the peer's pid once the peer
	// credentials (and, depending on the mode, the pidfd or the /proc/PID
	// handle and start time) have been taken, at accept with a pidfd, and
	// before the peer's executable and cgroup are read from /proc.
	AfterPeerCred func(pid int32)
}

// Validate reports every problem with c at once.
func (c Config) Validate() error {
	var errs []error
	if c.ProcRoot != "" && !filepath.IsAbs(c.ProcRoot) {
		errs = append(errs, fmt.Errorf("unix: proc_root %q must be an absolute path", c.ProcRoot))
	}
	if c.HashCacheSize < 0 {
		errs = append(errs, fmt.Errorf("unix: hash_cache_size %d must not be negative", c.HashCacheSize))
	}
	if c.MaxExeBytes < 0 {
		errs = append(errs, fmt.Errorf("unix: max_exe_bytes %d must not be negative", c.MaxExeBytes))
	}
	if c.HashConcurrency < 0 {
		errs = append(errs, fmt.Errorf("unix: hash_concurrency %d must not be negative", c.HashConcurrency))
	}
	switch c.TCPLookup {
	case "", TCPLookupAuto, TCPLookupBPF, TCPLookupProc:
	default:
		errs = append(errs, fmt.Errorf("unix: tcp_lookup %q must be %s, %s or %s", c.TCPLookup, TCPLookupAuto, TCPLookupBPF, TCPLookupProc))
	}
	return errors.Join(errs...)
}

// withDefaults returns c with zero fields replaced by their defaults.
func (c Config) withDefaults() Config {
	if c.ProcRoot == "" {
		c.ProcRoot = DefaultProcRoot
	}
	c.ProcRoot = filepath.Clean(c.ProcRoot)
	if c.HashCacheSize == 0 {
		c.HashCacheSize = DefaultHashCacheSize
	}
	if c.MaxExeBytes == 0 {
		c.MaxExeBytes = DefaultMaxExeBytes
	}
	if c.HashConcurrency == 0 {
		c.HashConcurrency = DefaultHashConcurrency
	}
	if c.TCPLookup == "" {
		c.TCPLookup = TCPLookupAuto
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}
