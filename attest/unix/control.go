package unix

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Socket-level control message types the attestor reads (Linux values;
// SCM_PIDFD is Linux 6.5 and later).
const (
	scmRights      = 0x01
	scmCredentials = 0x02
	scmPidfd       = 0x04
	solSocket      = 1
)

// cmsgHeaderLen is the size of struct cmsghdr and cmsgAlignTo the alignment
// of control messages: the kernel's on 64-bit platforms, where len is a
// size_t.
const (
	cmsgHeaderLen = 16
	cmsgAlignTo   = 8
)

// control is what one read's ancillary data said about the sender.
type control struct {
	// hasCreds is set when an SCM_CREDENTIALS message was present.
	hasCreds bool
	pid      int32
	uid, gid uint32
	// pidfd is the SCM_PIDFD descriptor, or -1.
	pidfd int
	// rights are descriptors the sender passed with SCM_RIGHTS; the receiver
	// must close them.
	rights []int
}

// errControl is wrapped by every parse failure.
var errControl = errors.New("unix: malformed control message")

// parseControl decodes the socket-level control messages in oob, as the
// kernel lays them out on 64-bit Linux. Every descriptor found is returned
// (in pidfd or rights) even when an error is also returned, so the caller
// can close them all.
func parseControl(oob []byte) (control, error) {
	c := control{pidfd: -1}
	var err error
	for len(oob) > 0 {
		if len(oob) < cmsgHeaderLen {
			return c, errors.Join(err, fmt.Errorf("%w: %d trailing bytes", errControl, len(oob)))
		}
		n := binary.NativeEndian.Uint64(oob[0:8])
		level := int32(binary.NativeEndian.Uint32(oob[8:12]))
		typ := int32(binary.NativeEndian.Uint32(oob[12:16]))
		if n < cmsgHeaderLen || n > uint64(len(oob)) {
			return c, errors.Join(err, fmt.Errorf("%w: length %d with %d bytes left", errControl, n, len(oob)))
		}
		data := oob[cmsgHeaderLen:n]
		switch {
		case level != solSocket:
			err = errors.Join(err, fmt.Errorf("%w: level %d", errControl, level))
		case typ == scmCredentials:
			if len(data) != 12 || c.hasCreds {
				err = errors.Join(err, fmt.Errorf("%w: SCM_CREDENTIALS of %d bytes", errControl, len(data)))
				break
			}
			c.hasCreds = true
			c.pid = int32(binary.NativeEndian.Uint32(data[0:4]))
			c.uid = binary.NativeEndian.Uint32(data[4:8])
			c.gid = binary.NativeEndian.Uint32(data[8:12])
		case typ == scmPidfd:
			if len(data) != 4 || c.pidfd >= 0 {
				err = errors.Join(err, fmt.Errorf("%w: SCM_PIDFD of %d bytes", errControl, len(data)))
				// A descriptor in it is still ours to close.
				if len(data) >= 4 {
					c.rights = append(c.rights, fdsOf(data)...)
				}
				break
			}
			fd := int(int32(binary.NativeEndian.Uint32(data)))
			if fd < 0 {
				err = errors.Join(err, fmt.Errorf("%w: SCM_PIDFD holds %d, not a descriptor", errControl, fd))
				break
			}
			c.pidfd = fd
		case typ == scmRights:
			c.rights = append(c.rights, fdsOf(data)...)
		default:
			err = errors.Join(err, fmt.Errorf("%w: type %d", errControl, typ))
		}
		// The next message starts at the aligned end of this one.
		next := (n + cmsgAlignTo - 1) &^ (cmsgAlignTo - 1)
		if next >= uint64(len(oob)) {
			break
		}
		oob = oob[next:]
	}
	return c, err
}

// fdsOf decodes the descriptors of an SCM_RIGHTS payload.
func fdsOf(data []byte) []int {
	fds := make([]int, 0, len(data)/4)
	for ; len(data) >= 4; data = data[4:] {
		if fd := int(int32(binary.NativeEndian.Uint32(data))); fd >= 0 { // negatives are not descriptors
			fds = append(fds, fd)
		}
	}
	return fds
}
