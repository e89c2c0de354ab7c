//go:build linux

package faultfs

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// fsType is the file system type the kernel shows for a mount
// (/proc/self/mountinfo, df -T).
const fsType = "fuse.faultfs"

// cacheTimeout is how long the kernel caches lookups and attributes,
// go-fuse's default; it never goes stale while the backing directory is
// changed only through the mount.
const cacheTimeout = time.Second

// stopTimeout bounds the wait for the server to stop once the connection
// has been aborted; only a backing-file system call that never returns
// could use it up.
const stopTimeout = 30 * time.Second

// FS is a mounted fault-injecting loopback file system. Its methods are
// safe for concurrent use.
type FS struct {
	mountpoint string
	server     *fuse.Server
	served     chan struct{} // closed when the server has stopped
	faults     *faults

	unmountOnce sync.Once
	unmountErr  error
}

// ErrNoPassthrough means the kernel did not take file reads, writes and
// mappings off the server (FUSE passthrough: Linux 6.9 or later with
// CONFIG_FUSE_PASSTHROUGH, and CAP_SYS_ADMIN). Mount refuses to run
// without it, because a page fault on a mapped file would then wait for a
// server in the same Go process, which deadlocks.
var ErrNoPassthrough = errors.New("faultfs: FUSE passthrough is not in effect")

// faults is the switch and counters shared by every node and handle of one
// mount.
type faults struct {
	failSync atomic.Bool
	failures atomic.Int64
	served   atomic.Int64 // reads and writes that reached the server
}

// syncResult reports whether a sync must fail, and counts it if so.
func (f *faults) syncResult() syscall.Errno {
	if f.failSync.Load() {
		f.failures.Add(1)
		return syscall.EIO
	}
	return 0
}

// Mount mounts a loopback of backing at mountpoint (both existing
// directories) and serves it until Unmount. Mounting needs root
// (CAP_SYS_ADMIN) and /dev/fuse; the fusermount helper is never used.
func Mount(backing, mountpoint string) (*FS, error) {
	backing, err := directory("backing", backing)
	if err != nil {
		return nil, err
	}
	mountpoint, err = directory("mount point", mountpoint)
	if err != nil {
		return nil, err
	}
	var st syscall.Stat_t
	if err := syscall.Stat(backing, &st); err != nil {
		return nil, fmt.Errorf("faultfs: mount: %w", err)
	}

	f := &FS{mountpoint: mountpoint, served: make(chan struct{}), faults: &faults{}}
	root := &fs.LoopbackRoot{Path: backing, Dev: st.Dev}
	rootNode := &node{LoopbackNode: &fs.LoopbackNode{RootData: root}, faults: f.faults}
	root.RootNode = rootNode

	timeout := cacheTimeout
	opts := &fs.Options{
		EntryTimeout: &timeout,
		AttrTimeout:  &timeout,
		MountOptions: fuse.MountOptions{
			// mount(2) directly: no fusermount binary is assumed.
			DirectMountStrict: true,
			FsName:            backing,
			Name:              strings.TrimPrefix(fsType, "fuse."),
			// FUSE passthrough is on by default: see checkPassthrough.
		},
	}

	before, err := countMounts(mountpoint)
	if err != nil {
		return nil, err
	}
	server, err := fuse.NewServer(fs.NewNodeFS(rootNode, opts), mountpoint, &opts.MountOptions)
	if err != nil {
		err = fmt.Errorf("faultfs: mount %s on %s (needs root and /dev/fuse): %w", backing, mountpoint, err)
		// go-fuse may fail after mount(2) succeeded (the INIT
		// handshake); never leave that dead mount behind.
		if after, cerr := countMounts(mountpoint); cerr == nil && after > before {
			if uerr := unix.Unmount(mountpoint, unix.MNT_FORCE|unix.MNT_DETACH); uerr != nil {
				err = errors.Join(err, fmt.Errorf("faultfs: detach %s: %w", mountpoint, uerr))
			}
		}
		return nil, err
	}
	f.server = server
	go func() {
		defer close(f.served)
		server.Serve()
	}()
	if err := server.WaitMount(); err != nil {
		err = fmt.Errorf("faultfs: mount %s on %s: %w", backing, mountpoint, err)
		return nil, errors.Join(err, f.Unmount())
	}
	if err := f.checkPassthrough(); err != nil {
		return nil, errors.Join(err, f.Unmount())
	}
	return f, nil
}

// checkPassthrough makes sure the kernel reads and writes files, and
// serves page faults on their mappings, from the backing files itself
// (FUSE passthrough), so that no page fault ever waits for this server.
//
// Without it the mount deadlocks the process that serves it: a goroutine
// that touches a mapped page (SQLite's -shm, or a database read with
// mmap_size) blocks in the kernel until the server answers, and the Go
// runtime cannot stop that goroutine, so the next garbage collection stops
// every other goroutine, the server's included, and waits forever. Reads,
// writes and fsync are system calls, which the runtime does not wait for.
//
// It checks that the kernel offers passthrough, then writes and reads a
// probe file and makes sure neither reached the server.
func (f *FS) checkPassthrough() error {
	if f.server.KernelSettings().Flags64()&fuse.CAP_PASSTHROUGH == 0 {
		return fmt.Errorf("%w: mount %s: the kernel does not offer it", ErrNoPassthrough, f.mountpoint)
	}
	probe, err := os.CreateTemp(f.mountpoint, ".faultfs-probe-")
	if err != nil {
		return fmt.Errorf("faultfs: mount %s: probe: %w", f.mountpoint, err)
	}
	defer os.Remove(probe.Name())
	defer probe.Close()
	if _, err := probe.WriteAt([]byte("probe"), 0); err != nil {
		return fmt.Errorf("faultfs: mount %s: probe: %w", f.mountpoint, err)
	}
	if _, err := probe.ReadAt(make([]byte, 5), 0); err != nil {
		return fmt.Errorf("faultfs: mount %s: probe: %w", f.mountpoint, err)
	}
	if n := f.faults.served.Load(); n != 0 {
		return fmt.Errorf("%w: mount %s: %d reads and writes reached the server", ErrNoPassthrough, f.mountpoint, n)
	}
	return nil
}

// directory returns path made absolute, or an error if it is not a
// directory.
func directory(what, path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("faultfs: %s: %w", what, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("faultfs: %s: %w", what, err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("faultfs: %s %s: %w", what, abs, syscall.ENOTDIR)
	}
	return abs, nil
}

// FailSync makes every fsync and fdatasync (of files and directories)
// return EIO without syncing while on is true. Writes still reach the
// backing files, as they reach the page cache of a real disk whose
// write-back failed. msync of a mapping is not failed (see the package
// documentation).
func (f *FS) FailSync(on bool) {
	f.faults.failSync.Store(on)
}

// SyncFailures reports how many syncs FailSync has failed since Mount.
func (f *FS) SyncFailures() int64 {
	return f.faults.failures.Load()
}

// Unmount unmounts the file system and waits for the server to stop. If a
// file is still open, it detaches the mount and aborts the FUSE connection
// (after which the open files' syncs fail with ENOTCONN) and returns an
// error wrapping EBUSY: the mount point is free and the server stopped
// either way. Calls after the first return the first call's result.
func (f *FS) Unmount() error {
	f.unmountOnce.Do(func() { f.unmountErr = f.unmount() })
	return f.unmountErr
}

// unmount does Unmount's work, once.
func (f *FS) unmount() error {
	// umount(2), retried briefly while the kernel finishes releasing
	// files; on success go-fuse waits for its read loops to exit.
	err := f.server.Unmount()
	if err == nil {
		<-f.served
		return nil
	}
	err = fmt.Errorf("faultfs: unmount %s: %w", f.mountpoint, err)
	// MNT_FORCE makes FUSE abort the connection, so the server's reads of
	// /dev/fuse fail and it stops; MNT_DETACH frees the mount point even
	// though files are open.
	if derr := unix.Unmount(f.mountpoint, unix.MNT_FORCE|unix.MNT_DETACH); derr != nil {
		err = errors.Join(err, fmt.Errorf("faultfs: force unmount %s: %w", f.mountpoint, derr))
	} else {
		err = fmt.Errorf("%w (detached, connection aborted)", err)
	}
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	select {
	case <-f.served:
		return err
	case <-timer.C:
		return errors.Join(err, fmt.Errorf("faultfs: unmount %s: the server did not stop within %v", f.mountpoint, stopTimeout))
	}
}

// countMounts reports how many faultfs mounts /proc/self/mountinfo lists at
// mountpoint.
func countMounts(mountpoint string) (int, error) {
	file, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return 0, fmt.Errorf("faultfs: %w", err)
	}
	defer file.Close()
	n := 0
	sc := bufio.NewScanner(file)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional…] - type source super-options
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 || unescapeMountinfo(fields[4]) != mountpoint {
			continue
		}
		for i := 5; i+1 < len(fields); i++ {
			if fields[i] == "-" {
				if fields[i+1] == fsType {
					n++
				}
				break
			}
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("faultfs: read mountinfo: %w", err)
	}
	return n, nil
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for a space)
// in a mountinfo path.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// node is a loopback node whose syncs obey the fault switch. Every node of
// the mount is one: WrapChild wraps each new child.
type node struct {
	*fs.LoopbackNode
	faults *faults
}

var (
	_ fs.NodeWrapChilder    = (*node)(nil)
	_ fs.NodeFsyncer        = (*node)(nil)
	_ fs.NodeOpendirHandler = (*node)(nil)
	_ fs.NodeReader         = (*node)(nil)
	_ fs.NodeWritever       = (*node)(nil)
)

// WrapChild wraps the loopback node for a new child.
func (n *node) WrapChild(ctx context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	lb, ok := ops.(*fs.LoopbackNode)
	if !ok {
		return ops
	}
	return &node{LoopbackNode: lb, faults: n.faults}
}

// Fsync serves fsync and fdatasync of a file, which the kernel sends to the
// server even for passthrough files: EIO while syncs fail, else the backing
// file's fsync. go-fuse asks the node before the file handle.
func (n *node) Fsync(ctx context.Context, f fs.FileHandle, flags uint32) syscall.Errno {
	if errno := n.faults.syncResult(); errno != 0 {
		return errno
	}
	if fsyncer, ok := f.(fs.FileFsyncer); ok {
		return fsyncer.Fsync(ctx, flags)
	}
	// No handle of ours: sync the backing file by path.
	rel := n.Path(n.RootData.RootNode.EmbeddedInode())
	file, err := os.Open(filepath.Join(n.RootData.Path, rel))
	if err != nil {
		return fs.ToErrno(err)
	}
	defer file.Close()
	return fs.ToErrno(file.Sync())
}

// Read serves a read that passthrough did not take: it counts it (see
// checkPassthrough) and reads the backing file.
func (n *node) Read(ctx context.Context, f fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n.faults.served.Add(1)
	if r, ok := f.(fs.FileReader); ok {
		return r.Read(ctx, dest, off)
	}
	return nil, syscall.ENOTSUP
}

// Writev serves a write that passthrough did not take: it counts it (see
// checkPassthrough) and writes the backing file.
func (n *node) Writev(ctx context.Context, f fs.FileHandle, data [][]byte, off int64) (uint32, syscall.Errno) {
	n.faults.served.Add(1)
	if w, ok := f.(fs.FileWritever); ok {
		return w.Writev(ctx, data, off)
	}
	return 0, syscall.ENOTSUP
}

// OpendirHandle opens the loopback directory stream behind a handle whose
// fsync obeys the fault switch: go-fuse asks a directory's handle before
// its node.
func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	h, fuseFlags, errno := n.LoopbackNode.OpendirHandle(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	return &dirHandle{inner: h, faults: n.faults}, fuseFlags, 0
}

// dirHandle forwards a directory handle's operations to the loopback
// directory stream, except a failing fsync.
type dirHandle struct {
	inner  fs.FileHandle
	faults *faults
}

var (
	_ fs.FileReaddirenter = (*dirHandle)(nil)
	_ fs.FileSeekdirer    = (*dirHandle)(nil)
	_ fs.FileReleasedirer = (*dirHandle)(nil)
	_ fs.FileFsyncdirer   = (*dirHandle)(nil)
	_ fs.FileIoctler      = (*dirHandle)(nil)
)

// Readdirent returns the next directory entry.
func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if r, ok := d.inner.(fs.FileReaddirenter); ok {
		return r.Readdirent(ctx)
	}
	return nil, 0
}

// Seekdir moves to a directory offset.
func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if s, ok := d.inner.(fs.FileSeekdirer); ok {
		return s.Seekdir(ctx, off)
	}
	return syscall.ENOTSUP
}

// Releasedir closes the backing directory.
func (d *dirHandle) Releasedir(ctx context.Context, flags uint32) {
	if r, ok := d.inner.(fs.FileReleasedirer); ok {
		r.Releasedir(ctx, flags)
	}
}

// Fsyncdir serves fsync of a directory: EIO while syncs fail, else the
// backing directory's fsync.
func (d *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	if errno := d.faults.syncResult(); errno != 0 {
		return errno
	}
	if s, ok := d.inner.(fs.FileFsyncdirer); ok {
		return s.Fsyncdir(ctx, flags)
	}
	return syscall.ENOTSUP
}

// Ioctl forwards an ioctl on the directory.
func (d *dirHandle) Ioctl(ctx context.Context, cmd uint32, arg uint64, input []byte, output []byte) (int32, syscall.Errno) {
	if i, ok := d.inner.(fs.FileIoctler); ok {
		return i.Ioctl(ctx, cmd, arg, input, output)
	}
	return 0, syscall.ENOTTY
}
