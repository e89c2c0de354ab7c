package main

import (
	"math"
	"math/bits"
	"time"
)

// The histogram is log-linear in the HDR style: values are nanoseconds,
// every power of two is split into histHalf sub-buckets, so a reported
// percentile is at most 1/histHalf (0.8%) above the true value. It is a fixed
// array, so recording never allocates.
const (
	histSubBits  = 8
	histSub      = 1 << histSubBits // exact below this many nanoseconds
	histHalf     = histSub / 2
	histMaxShift = 30 // values clamp at histSub<<30 ns, about 275 s
	histBuckets  = histSub + histMaxShift*histHalf
)

type hist struct {
	counts [histBuckets]uint64
	n      uint64
	sum    uint64 // nanoseconds
	max    uint64 // nanoseconds, exact
}

func histIndex(v uint64) int {
	if v < histSub {
		return int(v)
	}
	shift := bits.Len64(v) - histSubBits
	if shift > histMaxShift {
		return histBuckets - 1
	}
	return histSub + (shift-1)*histHalf + int(v>>shift) - histHalf
}

// histUpper is the largest value that falls into bucket i.
func histUpper(i int) uint64 {
	if i < histSub {
		return uint64(i)
	}
	shift := (i-histSub)/histHalf + 1
	sub := uint64((i-histSub)%histHalf + histHalf)
	return (sub+1)<<shift - 1
}

func (h *hist) record(d time.Duration) {
	v := uint64(0)
	if d > 0 {
		v = uint64(d)
	}
	h.counts[histIndex(v)]++
	h.n++
	h.sum += v
	if v > h.max {
		h.max = v
	}
}

func (h *hist) merge(o *hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.max = max(h.max, o.max)
}

// quantile returns the value at quantile q (0..1): the upper edge of the
// bucket holding the ceil(q*n)-th smallest value, never more than the
// exact maximum.
func (h *hist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(min(histUpper(i), h.max))
		}
	}
	return time.Duration(h.max)
}

func (h *hist) mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / h.n)
}
