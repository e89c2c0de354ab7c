// Package brokertest holds test harnesses for the broker's socket: a
// symlink-swapping attacker running as another uid, and a root-owned target
// file to check.
//
// The attacker (StartSwapper) is the program in testdata/symlinkswap, built
// from source by the test and run as nobody with write access to the
// socket's directory through a group. It swaps every name that appears
// there for a symbolic link to a target, so that a broker which changes a
// file's mode or owner, or renames it, by a path through that directory
// acts on the target instead. The target is a RootFile, whose Check fails
// the test if anything about it changed:
//
//	target := brokertest.NewRootFile(t)
//	dir := brokertest.Dir(t, 0, gid, 0o770)
//	sw := brokertest.StartSwapper(t, brokertest.SwapperConfig{
//		Dir: dir, Group: gid, Target: target.Path, Spare: "broker.sock",
//	})
//	defer target.Check(t)
//	// ... create the socket in dir, again and again ...
//	swapped := sw.Stop()
//
// Dir makes the directories both need: the socket's, writable by the
// attacker's group, and one that other users can enter for a program they
// run. All of it needs root: the attacker runs as another user, the target
// is root's, and the directories are given owners.
package brokertest
