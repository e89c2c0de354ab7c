//go:build linux

package unix

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
)

// bpfHolders finds the holders of sockets with a BPF iterator over every
// open file of every task (bpf_iter task_file; Linux 5.11 for
// bpf_get_current_task_btf), instead of a
// readlink per file under /proc/*/fd: the kernel walks the fd tables
// itself, a few hundredths of the cost. It needs CAP_BPF and CAP_PERFMON
// (or CAP_SYS_ADMIN) and a kernel that describes itself in BTF, which gives
// the offsets of the few fields the program reads.
//
// The program is the whole lookup: for each open file whose inode is on
// sockfs and whose number is a key of the map of wanted sockets, it writes
// a record {pid, tid uint32; inode uint64} with the pid of the task's
// thread group and its own, both as the broker's pid namespace numbers
// them. The iterator walks the tasks of the pid namespace of the process
// that reads it, in pid order, visiting a thread other than the group
// leader only when its file table is its own (clone without CLONE_FILES).
// One lookup runs at a time (mu): the map and the buffer are shared.
type bpfHolders struct {
	mu   sync.Mutex
	want *ebpf.Map
	prog *ebpf.Program
	iter *link.Iter
	buf  bytes.Buffer
}

// bpfRecord is the size of a record the program writes.
const bpfRecord = 16

// bpfMaxWanted is the number of sockets one pass of the iterator looks for;
// a lookup for more makes several passes.
const bpfMaxWanted = 1024

// sockfsMagic is the s_magic of the superblock of sockets (SOCKFS_MAGIC).
const sockfsMagic = 0x534F434B

// loadBPFHolders loads the iterator. The pids it gives are numbered as the
// pid namespace of the process reading it numbers them.
func loadBPFHolders() (*bpfHolders, error) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return nil, fmt.Errorf("kernel BTF: %w", err)
	}
	// The program's context is struct bpf_iter__task_file: meta (which
	// holds the seq_file written to), task, fd and file.
	var offs struct {
		ctxMeta, ctxTask, ctxFile, metaSeq, fInode, iIno, iSb, sMagic, groupLeader, threadPid, pidLevel, pidNumbers, upidSize int
	}
	for _, f := range []struct {
		dst         *int
		typ, member string
	}{
		{&offs.ctxMeta, "bpf_iter__task_file", "meta"},
		{&offs.ctxTask, "bpf_iter__task_file", "task"},
		{&offs.ctxFile, "bpf_iter__task_file", "file"},
		{&offs.metaSeq, "bpf_iter_meta", "seq"},
		{&offs.fInode, "file", "f_inode"},
		{&offs.iIno, "inode", "i_ino"},
		{&offs.iSb, "inode", "i_sb"},
		{&offs.sMagic, "super_block", "s_magic"},
		{&offs.groupLeader, "task_struct", "group_leader"},
		{&offs.threadPid, "task_struct", "thread_pid"},
		{&offs.pidLevel, "pid", "level"},
		{&offs.pidNumbers, "pid", "numbers"},
	} {
		if *f.dst, err = memberOffset(spec, f.typ, f.member); err != nil {
			return nil, err
		}
		if *f.dst > 1<<15-1 {
			return nil, fmt.Errorf("kernel BTF: struct %s: %s at offset %d, out of reach", f.typ, f.member, *f.dst)
		}
	}
	var upid *btf.Struct
	if err := spec.TypeByName("upid", &upid); err != nil {
		return nil, fmt.Errorf("kernel BTF: struct upid: %w", err)
	}
	if nr, err := memberOffset(spec, "upid", "nr"); err != nil || nr != 0 {
		return nil, fmt.Errorf("kernel BTF: struct upid: nr is not its first member (%v)", err)
	}
	offs.upidSize = int(upid.Size)

	want, err := ebpf.NewMap(&ebpf.MapSpec{
		Name: "cb_want_socks", Type: ebpf.Hash, KeySize: 8, ValueSize: 1, MaxEntries: bpfMaxWanted,
	})
	if err != nil {
		return nil, fmt.Errorf("create map: %w", err)
	}
	// The record on the stack, from r10, and the pointer read through.
	const (
		recPid = -16
		recTid = -12
		recIno = -8
		ptrTmp = -24
	)
	// readNr copies to the record at dst the number of the task in r9 in
	// the broker's pid namespace, task->thread_pid->numbers[level].nr,
	// where r7 is the offset of numbers[level] in a struct pid. It reads
	// with bpf_probe_read_kernel, since numbers is a flexible array indexed
	// by a value the verifier cannot bound, and jumps to label, leaving dst
	// zero, when a read fails.
	readNr := func(dst int16, label string) asm.Instructions {
		return asm.Instructions{
			asm.Mov.Reg(asm.R1, asm.RFP),
			asm.Add.Imm(asm.R1, ptrTmp),
			asm.Mov.Imm(asm.R2, 8),
			asm.Mov.Reg(asm.R3, asm.R9),
			asm.Add.Imm(asm.R3, int32(offs.threadPid)),
			asm.FnProbeReadKernel.Call(),
			asm.JNE.Imm(asm.R0, 0, label),
			asm.LoadMem(asm.R3, asm.RFP, ptrTmp, asm.DWord),
			asm.JEq.Imm(asm.R3, 0, label),
			asm.Add.Reg(asm.R3, asm.R7),
			asm.Mov.Reg(asm.R1, asm.RFP),
			asm.Add.Imm(asm.R1, int32(dst)),
			asm.Mov.Imm(asm.R2, 4),
			asm.FnProbeReadKernel.Call(),
		}
	}
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R7, asm.R6, int16(offs.ctxFile), asm.DWord),
		asm.JEq.Imm(asm.R7, 0, "out"),
		asm.LoadMem(asm.R8, asm.R7, int16(offs.fInode), asm.DWord),
		asm.JEq.Imm(asm.R8, 0, "out"),
		asm.LoadMem(asm.R2, asm.R8, int16(offs.iSb), asm.DWord),
		asm.JEq.Imm(asm.R2, 0, "out"),
		asm.LoadMem(asm.R2, asm.R2, int16(offs.sMagic), asm.DWord),
		asm.JNE.Imm(asm.R2, sockfsMagic, "out"),
		asm.LoadMem(asm.R2, asm.R8, int16(offs.iIno), asm.DWord),
		asm.StoreMem(asm.RFP, recIno, asm.R2, asm.DWord),
		asm.LoadMapPtr(asm.R1, want.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, recIno),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		// A wanted socket. r7: where in a struct pid the number in the
		// broker's pid namespace is, the one of the task reading the
		// iterator (current): numbers[current->thread_pid->level].
		asm.FnGetCurrentTaskBtf.Call(),
		asm.LoadMem(asm.R1, asm.R0, int16(offs.threadPid), asm.DWord),
		asm.JEq.Imm(asm.R1, 0, "out"),
		asm.LoadMem(asm.R7, asm.R1, int16(offs.pidLevel), asm.Word),
		asm.Mul.Imm(asm.R7, int32(offs.upidSize)),
		asm.Add.Imm(asm.R7, int32(offs.pidNumbers)),
		asm.Mov.Imm(asm.R1, 0),
		asm.StoreMem(asm.RFP, recPid, asm.R1, asm.DWord),
		asm.LoadMem(asm.R9, asm.R6, int16(offs.ctxTask), asm.DWord),
		asm.JEq.Imm(asm.R9, 0, "out"),
	}
	insns = append(insns, readNr(recTid, "leader")...)
	insns = append(insns,
		asm.LoadMem(asm.R9, asm.R9, int16(offs.groupLeader), asm.DWord).WithSymbol("leader"),
		asm.JEq.Imm(asm.R9, 0, "write"),
	)
	insns = append(insns, readNr(recPid, "write")...)
	insns = append(insns,
		asm.LoadMem(asm.R1, asm.R6, int16(offs.ctxMeta), asm.DWord).WithSymbol("write"),
		asm.LoadMem(asm.R1, asm.R1, int16(offs.metaSeq), asm.DWord),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, recPid),
		asm.Mov.Imm(asm.R3, bpfRecord),
		asm.FnSeqWrite.Call(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	)
	prog, err := ebpf.NewProgramWithOptions(&ebpf.ProgramSpec{
		Name:         "cb_sock_holders",
		Type:         ebpf.Tracing,
		AttachType:   ebpf.AttachTraceIter,
		AttachTo:     "task_file",
		Instructions: insns,
		License:      "Dual BSD/GPL", // bpf_seq_write and bpf_probe_read_kernel are GPL-only helpers
	}, ebpf.ProgramOptions{KernelTypes: spec})
	if err != nil {
		want.Close()
		return nil, fmt.Errorf("load program: %w", err)
	}
	iter, err := link.AttachIter(link.IterOptions{Program: prog})
	if err != nil {
		prog.Close()
		want.Close()
		return nil, fmt.Errorf("attach iterator: %w", err)
	}
	return &bpfHolders{want: want, prog: prog, iter: iter}, nil
}

// memberOffset returns the byte offset of member in struct typ, looking
// into anonymous structs and unions.
func memberOffset(spec *btf.Spec, typ, member string) (int, error) {
	var s *btf.Struct
	if err := spec.TypeByName(typ, &s); err != nil {
		return 0, fmt.Errorf("kernel BTF: struct %s: %w", typ, err)
	}
	var find func(ms []btf.Member, base uint32) (uint32, bool)
	find = func(ms []btf.Member, base uint32) (uint32, bool) {
		for _, m := range ms {
			off := base + uint32(m.Offset.Bytes())
			if m.Name == member {
				return off, m.BitfieldSize == 0
			}
			if m.Name != "" {
				continue
			}
			var inner []btf.Member
			switch t := btf.UnderlyingType(m.Type).(type) {
			case *btf.Struct:
				inner = t.Members
			case *btf.Union:
				inner = t.Members
			}
			if o, ok := find(inner, off); ok {
				return o, true
			}
		}
		return 0, false
	}
	off, ok := find(s.Members, 0)
	if !ok {
		return 0, fmt.Errorf("kernel BTF: struct %s has no member %s", typ, member)
	}
	return int(off), nil
}

// errThreadFiles is returned when a thread whose file table is its own
// holds a wanted socket: the process's /proc/PID, which the holder is read
// from, does not describe what that thread holds or is.
var errThreadFiles = errors.New("a thread with a file table of its own holds the socket")

// lookup fills want, for each socket inode in it, with the pids of the
// processes that hold it, in pid order, as scanHolders does.
func (b *bpfHolders) lookup(want map[uint32][]int32) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	inos := make([]uint32, 0, len(want))
	for ino := range want {
		inos = append(inos, ino)
	}
	for len(inos) > 0 {
		n := min(len(inos), bpfMaxWanted)
		if err := b.pass(inos[:n], want); err != nil {
			return err
		}
		inos = inos[n:]
	}
	return nil
}

// pass runs the iterator once for the sockets inos.
func (b *bpfHolders) pass(inos []uint32, want map[uint32][]int32) (err error) {
	one := uint8(1)
	for i, ino := range inos {
		if err := b.want.Put(uint64(ino), one); err != nil {
			b.clear(inos[:i])
			return fmt.Errorf("bpf map update: %w", err)
		}
	}
	defer func() {
		if cerr := b.clear(inos); err == nil {
			err = cerr
		}
	}()
	r, err := b.iter.Open()
	if err != nil {
		return fmt.Errorf("open bpf iterator: %w", err)
	}
	b.buf.Reset()
	_, err = b.buf.ReadFrom(r)
	if cerr := r.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("read bpf iterator: %w", err)
	}
	recs := b.buf.Bytes()
	if len(recs)%bpfRecord != 0 {
		return fmt.Errorf("read bpf iterator: %d bytes is not a whole number of records", len(recs))
	}
	for ; len(recs) > 0; recs = recs[bpfRecord:] {
		pid := int32(binary.NativeEndian.Uint32(recs[0:]))
		tid := int32(binary.NativeEndian.Uint32(recs[4:]))
		ino64 := binary.NativeEndian.Uint64(recs[8:])
		ino := uint32(ino64)
		pids, ok := want[ino]
		if !ok || uint64(ino) != ino64 {
			// A key a failed clear left in the map: nobody asks about it,
			// and it must not fail the lookups of those who ask now.
			continue
		}
		if pid <= 0 || tid <= 0 {
			return fmt.Errorf("bpf iterator: socket inode %d held by a task whose pid could not be read", ino)
		}
		if tid != pid {
			return fmt.Errorf("%w (thread %d of pid %d)", errThreadFiles, tid, pid)
		}
		if len(pids) == 0 || pids[len(pids)-1] != pid { // one record per descriptor, tasks in pid order
			want[ino] = append(pids, pid)
		}
	}
	return nil
}

// clear deletes inos from the map of wanted sockets.
func (b *bpfHolders) clear(inos []uint32) error {
	var first error
	for _, ino := range inos {
		if err := b.want.Delete(uint64(ino)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) && first == nil {
			first = fmt.Errorf("bpf map delete: %w", err)
		}
	}
	return first
}
