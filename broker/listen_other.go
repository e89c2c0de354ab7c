//go:build !linux

package broker

import (
	"errors"
	"net"
	"os"
)

// ListenUnix would create the socket API's Unix socket. Creating it safely
// in a directory others may write relies on /proc/self/fd, and the unix
// attestor the socket needs is Linux-only, so on this platform it fails.
func ListenUnix(path string, mode os.FileMode, gid int) (*net.UnixListener, error) {
	return nil, errors.New("broker: the socket API is supported on linux only")
}
