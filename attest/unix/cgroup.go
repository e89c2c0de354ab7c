package unix

import (
	"bytes"
	"errors"
	"strings"
)

// errCgroupConflict reports cgroup hierarchies that place one process in two
// different pods or containers.
var errCgroupConflict = errors.New("unix: cgroup hierarchies disagree on pod or container")

// parseCgroup extracts the Kubernetes pod UID and the container id from the
// content of /proc/PID/cgroup, for cgroup v1 (one line per hierarchy) and v2
// ("0::/path"). Either result is empty when no line has it. An error means
// two lines disagree.
//
// Only layouts that container runtimes and the kubelet create are
// recognised, anchored at the root of the broker's cgroup namespace:
//
//	/kubepods[.slice]/[QoS/]pod-segment[/container-segment[/…]]
//	/docker/<id>[/…]
//	/system.slice/<runtime>-<id>.scope[/…]
//	/ecs/<task>/<id>[/…]
//	/../<container-segment>[/…]   a sibling container, seen from a private cgroup namespace
//
// A container segment found anywhere else is ignored, because an
// unprivileged user may create cgroups with any name inside a delegated
// subtree such as /user.slice/….
func parseCgroup(b []byte) (podUID, containerID string, err error) {
	for len(b) > 0 {
		var line []byte
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			line, b = b, nil
		}
		// hierarchy-ID:controller-list:cgroup-path; the path may contain ':'.
		i := bytes.IndexByte(line, ':')
		if i < 0 {
			continue
		}
		j := bytes.IndexByte(line[i+1:], ':')
		if j < 0 {
			continue
		}
		pod, ctr := parseCgroupPath(line[i+1+j+1:])
		if pod != "" {
			if podUID != "" && podUID != pod {
				return "", "", errCgroupConflict
			}
			podUID = pod
		}
		if ctr != "" {
			if containerID != "" && containerID != ctr {
				return "", "", errCgroupConflict
			}
			containerID = ctr
		}
	}
	return podUID, containerID, nil
}

// parseCgroupPath applies the layouts of parseCgroup to one cgroup path.
func parseCgroupPath(p []byte) (podUID, containerID string) {
	if len(p) == 0 || p[0] != '/' {
		return "", ""
	}
	var segs [8][]byte
	n := 0
	for rest := p[1:]; len(rest) > 0 && n < len(segs); {
		var s []byte
		if i := bytes.IndexByte(rest, '/'); i >= 0 {
			s, rest = rest[:i], rest[i+1:]
		} else {
			s, rest = rest, nil
		}
		segs[n] = s
		n++
	}
	seg := func(i int) []byte {
		if i < n {
			return segs[i]
		}
		return nil
	}
	switch first := string(seg(0)); first {
	case "kubepods", "kubepods.slice":
		i := 1
		if isQoSSegment(seg(i), first == "kubepods.slice") {
			i++
		}
		uid, ok := podSegment(seg(i), first == "kubepods.slice")
		if !ok {
			return "", ""
		}
		id, _ := containerSegment(seg(i + 1))
		return uid, id
	case "docker":
		if id, ok := hex64(seg(1)); ok {
			return "", id
		}
	case "system.slice":
		if s := seg(1); bytes.HasSuffix(s, []byte(".scope")) {
			id, _ := containerSegment(s)
			return "", id
		}
	case "ecs":
		if len(seg(1)) > 0 {
			id, _ := hex64(seg(2))
			return "", id
		}
	case "..":
		id, _ := containerSegment(seg(1))
		return "", id
	}
	return "", ""
}

// isQoSSegment reports whether s is a kubelet QoS-class cgroup.
func isQoSSegment(s []byte, systemd bool) bool {
	if systemd {
		return string(s) == "kubepods-burstable.slice" || string(s) == "kubepods-besteffort.slice"
	}
	return string(s) == "burstable" || string(s) == "besteffort"
}

// podSegment parses a kubelet pod cgroup: "pod<uid>" (cgroupfs driver) or
// "kubepods[-<qos>]-pod<uid with underscores>.slice" (systemd driver). The
// UID is returned in its dashed form.
func podSegment(s []byte, systemd bool) (string, bool) {
	var uid []byte
	if systemd {
		rest, ok := bytes.CutSuffix(s, []byte(".slice"))
		if !ok {
			return "", false
		}
		for _, prefix := range []string{"kubepods-pod", "kubepods-burstable-pod", "kubepods-besteffort-pod"} {
			if u, ok := bytes.CutPrefix(rest, []byte(prefix)); ok {
				uid = u
				break
			}
		}
	} else {
		uid, _ = bytes.CutPrefix(s, []byte("pod"))
		if len(uid) == len(s) {
			uid = nil
		}
	}
	return podUID(uid, systemd)
}

// podUID validates a pod UID: a UUID in lowercase 8-4-4-4-12 form (with '_'
// in place of '-' for the systemd driver) or the 32 lowercase hex digits the
// kubelet gives static pods.
func podUID(u []byte, systemd bool) (string, bool) {
	sep := byte('-')
	if systemd {
		sep = '_'
	}
	switch len(u) {
	case 32:
		for _, c := range u {
			if !isLowerHex(c) {
				return "", false
			}
		}
		return string(u), true
	case 36:
		var out [36]byte
		for i, c := range u {
			switch i {
			case 8, 13, 18, 23:
				if c != sep {
					return "", false
				}
				c = '-'
			default:
				if !isLowerHex(c) {
					return "", false
				}
			}
			out[i] = c
		}
		return string(out[:]), true
	}
	return "", false
}

// containerSegment parses a container cgroup: "<id>", "<runtime>-<id>" or
// "<runtime>-<id>.scope", where id is 64 lowercase hex digits.
func containerSegment(s []byte) (string, bool) {
	s, _ = bytes.CutSuffix(s, []byte(".scope"))
	for _, prefix := range []string{"cri-containerd-", "crio-", "docker-", "containerd-", "libpod-"} {
		if rest, ok := bytes.CutPrefix(s, []byte(prefix)); ok {
			s = rest
			break
		}
	}
	return hex64(s)
}

// hex64 returns s as a string when it is 64 lowercase hex digits.
func hex64(s []byte) (string, bool) {
	if len(s) != 64 {
		return "", false
	}
	for _, c := range s {
		if !isLowerHex(c) {
			return "", false
		}
	}
	return strings.Clone(string(s)), true
}

func isLowerHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f'
}
