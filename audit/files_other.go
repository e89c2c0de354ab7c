//go:build !linux

package audit

import "os"

// statID returns the identity of the file at path.
func statID(path string) (fileID, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileID{}, err
	}
	return idOf(fi), nil
}

// fileIDOf returns the identity of the open file f.
func fileIDOf(f *os.File) (fileID, error) {
	fi, err := f.Stat()
	if err != nil {
		return fileID{}, err
	}
	return idOf(fi), nil
}

// syncData makes f's data durable.
func syncData(f *os.File) error {
	return f.Sync()
}
