package unix

import (
	"container/list"
	"sync"
)

// fileID identifies the content of a file without reading it. A file
// replaced by rename gets a new inode; a file rewritten in place gets a new
// change time, which, unlike the modification time, its owner cannot set
// back.
type fileID struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64 // nanoseconds since the epoch
}

// hashCache is a bounded, concurrency-safe least-recently-used map from file
// identity to the lowercase hex SHA-256 of the file.
type hashCache struct {
	mu  sync.Mutex
	max int
	m   map[fileID]*list.Element
	ll  list.List // of *hashEntry, most recently used first
}

type hashEntry struct {
	id  fileID
	hex string
}

func newHashCache(max int) *hashCache {
	return &hashCache{max: max, m: make(map[fileID]*list.Element, min(max, 64))}
}

// get returns the hash stored for id.
func (c *hashCache) get(id fileID) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[id]
	if !ok {
		return "", false
	}
	c.ll.MoveToFront(e)
	return e.Value.(*hashEntry).hex, true
}

// put stores the hash of id, evicting the least recently used entry when the
// cache is full.
func (c *hashCache) put(id fileID, hex string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[id]; ok {
		e.Value.(*hashEntry).hex = hex
		c.ll.MoveToFront(e)
		return
	}
	if c.ll.Len() >= c.max {
		if old := c.ll.Back(); old != nil {
			delete(c.m, old.Value.(*hashEntry).id)
			c.ll.Remove(old)
		}
	}
	c.m[id] = c.ll.PushFront(&hashEntry{id: id, hex: hex})
}

// len returns the number of entries.
func (c *hashCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}
