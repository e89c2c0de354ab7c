// Command symlinkswap is the attacker of the socket-creation race tests
// (broker and cmd/credbroker), which run it through brokertest.StartSwapper.
// Run as another user who can write DIR, it
// swaps every entry that appears in DIR for a symbolic link, as fast as it
// can, until it is killed:
//
//	symlinkswap DIR TARGET SPARE
//
// Each entry that is not a symbolic link (a broker makes none) or its own,
// except SPARE (the socket's own name, left alone so that the test can check
// the socket), is renamed away and a link put in its place: to TARGET for a file, and for a directory to a
// directory of links to TARGET under the names a socket inside it might
// have. A broker that changes a file's mode or owner, or renames it, by a
// path through DIR then acts on TARGET. The moved entry is then removed
// where it can be (a socket, an empty directory), and links older than a
// few hundred swaps are removed, so that DIR stays small.
//
// It prints "ready" once it has set up, then "swapped NAME" for each swap.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// prefix marks the attacker's own entries in DIR.
const prefix = ".atk-"

// keepLinks is how many of its links it leaves in DIR.
const keepLinks = 256

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: symlinkswap DIR TARGET SPARE")
		os.Exit(2)
	}
	dir, target, spare := os.Args[1], os.Args[2], os.Args[3]
	evil := filepath.Join(dir, prefix+"dir")
	if err := os.Mkdir(evil, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for _, n := range []string{"s", "sock", "socket", spare} {
		if err := os.Symlink(target, filepath.Join(evil, n)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	fmt.Println("ready")
	var links []string // its links, oldest first
	for n := 0; ; {
		d, err := os.Open(dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		names, _ := d.Readdirnames(-1)
		d.Close()
		for _, name := range names {
			if name == spare || strings.HasPrefix(name, prefix) {
				continue
			}
			p := filepath.Join(dir, name)
			if fi, err := os.Lstat(p); err != nil || fi.Mode()&os.ModeSymlink != 0 {
				continue // gone, or its own link
			}
			moved := filepath.Join(dir, fmt.Sprintf("%smoved-%d", prefix, n))
			n++
			if os.Rename(p, moved) != nil {
				continue
			}
			to := target
			if fi, err := os.Lstat(moved); err == nil && fi.IsDir() {
				to = evil
			}
			if os.Symlink(to, p) == nil {
				fmt.Println("swapped", name)
				links = append(links, p)
			}
			_ = os.Remove(moved)
			if len(links) > keepLinks {
				// Only if it is still the link: the name may be in use again.
				if fi, err := os.Lstat(links[0]); err == nil && fi.Mode()&os.ModeSymlink != 0 {
					_ = os.Remove(links[0])
				}
				links = links[1:]
			}
		}
	}
}
