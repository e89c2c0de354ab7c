package unix

import (
	"encoding/binary"
	"errors"
	"testing"
)

// cmsg builds one control message as the kernel lays it out on 64-bit
// Linux, padded to its aligned length.
func cmsg(level, typ int32, data []byte) []byte {
	n := cmsgHeaderLen + len(data)
	b := make([]byte, (n+cmsgAlignTo-1)&^(cmsgAlignTo-1))
	binary.NativeEndian.PutUint64(b[0:8], uint64(n))
	binary.NativeEndian.PutUint32(b[8:12], uint32(level))
	binary.NativeEndian.PutUint32(b[12:16], uint32(typ))
	copy(b[cmsgHeaderLen:], data)
	return b
}

func u32s(v ...uint32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.NativeEndian.PutUint32(b[4*i:], x)
	}
	return b
}

func creds(pid, uid, gid uint32) []byte { return cmsg(solSocket, scmCredentials, u32s(pid, uid, gid)) }

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

func TestParseControl(t *testing.T) {
	tests := []struct {
		name   string
		oob    []byte
		want   control
		hasErr bool
	}{
		{name: "empty", want: control{pidfd: -1}},
		{name: "credentials", oob: creds(42, 1000, 100), want: control{hasCreds: true, pid: 42, uid: 1000, gid: 100, pidfd: -1}},
		{name: "credentials and pidfd", oob: cat(creds(42, 0, 0), cmsg(solSocket, scmPidfd, u32s(7))),
			want: control{hasCreds: true, pid: 42, pidfd: 7}},
		{name: "rights", oob: cat(creds(1, 0, 0), cmsg(solSocket, scmRights, u32s(5, 6))),
			want: control{hasCreds: true, pid: 1, pidfd: -1, rights: []int{5, 6}}},
		{name: "two credentials", oob: cat(creds(1, 0, 0), creds(2, 0, 0)), want: control{hasCreds: true, pid: 1, pidfd: -1}, hasErr: true},
		{name: "short credentials", oob: cmsg(solSocket, scmCredentials, u32s(1, 2)), want: control{pidfd: -1}, hasErr: true},
		{name: "two pidfds", oob: cat(cmsg(solSocket, scmPidfd, u32s(7)), cmsg(solSocket, scmPidfd, u32s(8))),
			want: control{pidfd: 7, rights: []int{8}}, hasErr: true},
		{name: "other level", oob: cmsg(41, 1, nil), want: control{pidfd: -1}, hasErr: true},
		{name: "unknown type", oob: cmsg(solSocket, 99, nil), want: control{pidfd: -1}, hasErr: true},
		{name: "truncated header", oob: []byte{1, 2, 3}, want: control{pidfd: -1}, hasErr: true},
		{name: "length past end", oob: creds(1, 2, 3)[:20], want: control{pidfd: -1}, hasErr: true},
		{name: "length under header", oob: func() []byte { b := creds(1, 2, 3); binary.NativeEndian.PutUint64(b, 3); return b }(),
			want: control{pidfd: -1}, hasErr: true},
		{name: "rights kept after a bad message", oob: cat(cmsg(solSocket, 99, nil), cmsg(solSocket, scmRights, u32s(9))),
			want: control{pidfd: -1, rights: []int{9}}, hasErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseControl(tc.oob)
			if (err != nil) != tc.hasErr {
				t.Fatalf("err = %v, want error %v", err, tc.hasErr)
			}
			if err != nil && !errors.Is(err, errControl) {
				t.Errorf("err = %v does not wrap errControl", err)
			}
			if got.hasCreds != tc.want.hasCreds || got.pid != tc.want.pid || got.uid != tc.want.uid || got.gid != tc.want.gid ||
				got.pidfd != tc.want.pidfd || len(got.rights) != len(tc.want.rights) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			for i := range got.rights {
				if got.rights[i] != tc.want.rights[i] {
					t.Fatalf("rights %v, want %v", got.rights, tc.want.rights)
				}
			}
		})
	}
}

// FuzzParseControl: control data comes from the kernel, but its parser
// must not panic or lose a descriptor whatever the bytes.
func FuzzParseControl(f *testing.F) {
	f.Add([]byte{})
	f.Add(creds(42, 1000, 100))
	f.Add(cat(creds(42, 0, 0), cmsg(solSocket, scmPidfd, u32s(7))))
	f.Add(cat(creds(1, 0, 0), cmsg(solSocket, scmRights, u32s(5, 6))))
	f.Add(cmsg(solSocket, 99, nil))
	f.Fuzz(func(t *testing.T, oob []byte) {
		c, _ := parseControl(oob)
		got := len(c.rights)
		if c.pidfd != -1 {
			got++
		}
		if want := descriptorsIn(oob); got != want {
			t.Fatalf("parseControl returned %d descriptors, the messages carry %d", got, want)
		}
	})
}

// descriptorsIn counts the descriptors the well-formed socket-level
// SCM_RIGHTS and SCM_PIDFD messages of oob carry, walking them the plain way.
func descriptorsIn(oob []byte) int {
	n := 0
	for off := 0; off+cmsgHeaderLen <= len(oob); {
		l := int(binary.NativeEndian.Uint64(oob[off:]))
		if l < cmsgHeaderLen || l > len(oob)-off {
			break
		}
		level := int32(binary.NativeEndian.Uint32(oob[off+8:]))
		typ := int32(binary.NativeEndian.Uint32(oob[off+12:]))
		if level == solSocket && (typ == scmRights || typ == scmPidfd) {
			for d := off + cmsgHeaderLen; d+4 <= off+l; d += 4 {
				if int32(binary.NativeEndian.Uint32(oob[d:])) >= 0 { // a descriptor, not a stray negative
					n++
				}
			}
		}
		off += (l + cmsgAlignTo - 1) &^ (cmsgAlignTo - 1)
	}
	return n
}
