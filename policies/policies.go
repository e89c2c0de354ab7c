package policies

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/credbroker/credbroker/attest"
)

// File is one policy document handed to Compile. Name appears in problem
// positions ("name:line: message") and in Explain traces; Data is the YAML.
type File struct {
	Name string
	Data []byte
}

// Effect is what a matching policy does to a request.
type Effect string

// The two effects a policy can have. Deny wins over allow.
const (
	Allow Effect = "allow"
	Deny  Effect = "deny"
)

// Request describes what the caller asks for.
type Request struct {
	// Channel is the way in: socket, http, postgres, mysql or aws.
	Channel string `json:"channel"`
	// Credential is the name of the requested credential.
	Credential string `json:"credential"`
	// Method, Path and Host describe the outbound request where known
	// (injection listeners); empty otherwise.
	Method string `json:"method"`
	Path   string `json:"path"`
	Host   string `json:"host"`
	// Database and User are what a database client asked for when it
	// connected (database listeners); empty otherwise.
	Database string `json:"database"`
	User     string `json:"user"`
}

// Input is everything a decision is made on.
type Input struct {
	// Identity is the verified caller.
	Identity attest.Identity
	// Request is what it asks for.
	Request Request
	// Now is the time of the request, seen by conditions as `now`. The zero
	// value means time.Now().
	Now time.Time
}

// Decision is the outcome of evaluating a Set against an Input.
type Decision struct {
	// Effect is Allow or Deny.
	Effect Effect `json:"effect"`
	// Policy names the deciding policy; "" when no policy matched (default
	// deny).
	Policy string `json:"policy,omitempty"`
	// Version is the deciding policy's version hash, or the Set's version
	// for a default deny.
	Version string `json:"version"`
	// Reason is a sentence for people and the audit log, such as "allowed by
	// policy payments-can-charge".
	Reason string `json:"reason"`
	// TTL caps the lifetime of the issued credential: the deciding allow
	// policy's ttl. Zero means no cap.
	TTL time.Duration `json:"ttl,omitempty"`
}

// Allowed reports whether the decision allows the request.
func (d Decision) Allowed() bool { return d.Effect == Allow }

// Explanation is a Decision with the reasoning for every policy in the Set.
type Explanation struct {
	Decision
	// Trace has one step per policy, in load order.
	Trace []Step `json:"trace"`
}

// Step says whether one policy matched an Input and why.
type Step struct {
	Policy  string `json:"policy"`
	Effect  Effect `json:"effect"`
	File    string `json:"file"`
	Line    int    `json:"line"`
	Matched bool   `json:"matched"`
	// Why explains the outcome for the workload, the credential and the
	// condition, for example `workload: entry at line 7 matches; credential:
	// "demo" matches "demo"; condition: false`.
	Why string `json:"why"`
}

// Info describes one compiled policy, for listings and `credbroker check`.
type Info struct {
	Name        string        `json:"name"`
	Effect      Effect        `json:"effect"`
	File        string        `json:"file"`
	Line        int           `json:"line"`
	Version     string        `json:"version"`
	Credentials []string      `json:"credentials"`
	When        string        `json:"when,omitempty"`
	TTL         time.Duration `json:"ttl,omitempty"`
}

// Set is a compiled, immutable collection of policies. It is safe for
// concurrent use; a reload compiles a new Set and swaps it in whole.
type Set struct {
	all      []*policy // load order
	denies   []*policy // load order
	allows   []*policy // load order
	version  string
	warnings Problems
	acts     sync.Pool // of *activation
}

// policy is one compiled policy.
type policy struct {
	name      string
	effect    Effect
	file      string
	line      int
	workloads []workload
	creds     patterns
	when      string
	cond      *condition // nil without a when
	ttl       time.Duration
	version   string

	// Precomputed reasons keep Evaluate free of string building.
	allowReason string
	denyReason  string
}

// versionLen is the number of hex digits in a version hash.
const versionLen = 12

func shortHash(sum []byte) string { return hex.EncodeToString(sum)[:versionLen] }

// Self is the user and group of the broker that evaluates a Set: what
// `uid: self` and `gid: self` in a unix selector stand for.
type Self struct {
	UID, GID uint32
}

// id returns the uid, or the gid for the selector key "gid".
func (s Self) id(key string) int64 {
	if key == "gid" {
		return int64(s.GID)
	}
	return int64(s.UID)
}

// processSelf is the user and group of this process.
func processSelf() Self {
	return Self{UID: uint32(syscall.Getuid()), GID: uint32(syscall.Getgid())}
}

// CompileOptions says what Compile needs to know about the process that
// will evaluate the Set.
type CompileOptions struct {
	// Self is the broker's uid and gid, which `uid: self` and `gid: self`
	// stand for. A policy's version covers the resolved ids, not the word,
	// so the same file compiled for brokers under different users has
	// different versions. Nil means the process calling Compile, as a zero
	// Input.Now means the time of the call: a broker compiling its own
	// policies can leave it nil; a tool that compiles them on the broker's
	// behalf, such as `credbroker explain`, names the broker's ids.
	Self *Self
}

// Compile compiles files with the zero CompileOptions: `uid: self` is the
// uid of the calling process.
func Compile(files []File) (*Set, error) {
	return CompileOptions{}.Compile(files)
}

// Compile parses, validates and compiles policy documents. Files are read
// in the order given and policies in file order; that load order decides
// among several matching allow policies. When any document is invalid,
// Compile returns a nil Set and a Problems error listing every problem
// found, each with its file and line.
func (o CompileOptions) Compile(files []File) (*Set, error) {
	self := processSelf()
	if o.Self != nil {
		self = *o.Self
	}
	d := newDecoder(files, self)
	for _, f := range files {
		d.file(f)
	}
	if len(d.problems.list) > 0 {
		return nil, d.problems.sorted()
	}
	s := &Set{all: d.policies, warnings: d.warnings.sorted(), acts: sync.Pool{New: newActivation}}
	h := sha256.New()
	for _, p := range s.all {
		if p.effect == Deny {
			s.denies = append(s.denies, p)
		} else {
			s.allows = append(s.allows, p)
		}
		h.Write([]byte(p.version))
		h.Write([]byte{0})
	}
	s.version = shortHash(h.Sum(nil))
	return s, nil
}

// Version is a short hash over every policy's canonical content in load
// order. Two Sets with the same version decide every Input the same way.
func (s *Set) Version() string {
	if s == nil {
		return emptyVersion
	}
	return s.version
}

// emptyVersion is the version of a Set with no policies.
var emptyVersion = func() string { sum := sha256.Sum256(nil); return shortHash(sum[:]) }()

// Warnings lists what Compile accepted but a reviewer should look at, in
// file order and then line order, each positioned like a Problem: a github
// selector that pins no repository, a unix exe without exe_sha256, a deny
// that only token identities trigger (see the package documentation).
// The Set decides the same way whatever its warnings.
func (s *Set) Warnings() []Problem {
	if s == nil {
		return nil
	}
	return slices.Clone(s.warnings)
}

// Len is the number of policies in the Set.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	return len(s.all)
}

// Policies describes the policies of the Set in load order.
func (s *Set) Policies() []Info {
	if s == nil {
		return nil
	}
	infos := make([]Info, len(s.all))
	for i, p := range s.all {
		creds := make([]string, len(p.creds))
		for j, c := range p.creds {
			creds[j] = c.text
		}
		infos[i] = Info{
			Name: p.name, Effect: p.effect, File: p.file, Line: p.line, Version: p.version,
			Credentials: creds, When: p.when, TTL: p.ttl,
		}
	}
	return infos
}
