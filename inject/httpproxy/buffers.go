package httpproxy

import "sync"

// copyBufferSize is the size of the buffers bodies are copied through,
// the size ReverseProxy allocates when it has no pool.
const copyBufferSize = 32 << 10

// buffers lends ReverseProxy the buffers it copies response bodies
// through; without a pool it allocates one per request, and the garbage
// collector's work then grows with the request rate.
type buffers struct{ pool sync.Pool }

// Get returns a buffer of copyBufferSize bytes.
func (b *buffers) Get() []byte {
	if p, ok := b.pool.Get().(*[]byte); ok {
		return *p
	}
	return make([]byte, copyBufferSize)
}

// Put returns a buffer for reuse.
func (b *buffers) Put(buf []byte) {
	if cap(buf) != copyBufferSize {
		return
	}
	buf = buf[:copyBufferSize]
	b.pool.Put(&buf)
}

// copyBuffers is shared by every listener.
var copyBuffers = &buffers{}
