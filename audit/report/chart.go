package report

import (
	"fmt"
	"math"
	"time"
)

// chart is the geometry of the timeline's stacked bar chart, in the SVG's
// user units: computed here, drawn by the template.
type chart struct {
	Width, Height float64
	// The plot area, inside the axes' labels.
	Left, Top, Right, Bottom float64
	Bars                     []bar
	YTicks                   []tick
	XLabels                  []tick
	// Title and Desc are the chart's text alternative.
	Title, Desc string
}

// bar is one bucket's stack: allow at the bottom, then deny, then error.
type bar struct {
	X, W     float64
	Segments []segment
	Label    string // the bucket and its counts, for a tooltip and screen readers
}

// segment is one outcome's part of a bar.
type segment struct {
	Class string // allow, deny or error: the CSS class that colours it
	Y, H  float64
}

// tick is a labelled position on an axis.
type tick struct {
	At   float64
	Text string
}

// Dimensions of the chart in user units; the SVG scales to the page.
const (
	chartWidth  = 960
	chartHeight = 260
	chartLeft   = 56 // room for the y labels
	chartRight  = 12
	chartTop    = 12
	chartBottom = 34 // room for the x labels
	maxXLabels  = 12
)

// newChart lays out the timeline of rep.
func newChart(rep *Report) *chart {
	c := &chart{
		Width: chartWidth, Height: chartHeight,
		Left: chartLeft, Top: chartTop, Right: chartWidth - chartRight, Bottom: chartHeight - chartBottom,
		Title: fmt.Sprintf("Decisions per %s by outcome", stepName(rep.Step)),
		Desc: fmt.Sprintf("%s decisions from %s to %s: %s allowed, %s denied, %s errors; busiest %s: %s. The table below lists every %s with decisions.",
			number(rep.Totals.Total()), formatTime(rep.Since), formatTime(rep.Until), number(rep.Totals.Allow),
			number(rep.Totals.Deny), number(rep.Totals.Error), stepName(rep.Step), busiest(rep), stepName(rep.Step)),
	}
	var peak int64
	for _, b := range rep.Timeline {
		peak = max(peak, b.Total())
	}
	yStep, yMax := yScale(peak)
	plotH := c.Bottom - c.Top
	for v := int64(0); v <= yMax; v += yStep {
		c.YTicks = append(c.YTicks, tick{At: c.Bottom - float64(v)/float64(yMax)*plotH, Text: number(v)})
	}
	n := len(rep.Timeline)
	if n == 0 {
		return c
	}
	slot := (c.Right - c.Left) / float64(n)
	gap := math.Min(slot*0.2, 4)
	every := (n + maxXLabels - 1) / maxXLabels
	for i, b := range rep.Timeline {
		x := c.Left + float64(i)*slot
		br := bar{X: x + gap/2, W: slot - gap, Label: bucketLabel(b, rep.Step)}
		y := c.Bottom
		for _, part := range []struct {
			class string
			n     int64
		}{{"allow", b.Allow}, {"deny", b.Deny}, {"error", b.Error}} {
			if part.n == 0 {
				continue
			}
			h := float64(part.n) / float64(yMax) * plotH
			y -= h
			br.Segments = append(br.Segments, segment{Class: part.class, Y: y, H: h})
		}
		c.Bars = append(c.Bars, br)
		if i%every == 0 {
			c.XLabels = append(c.XLabels, tick{At: x + slot/2, Text: axisLabel(b.Start, rep.Step)})
		}
	}
	return c
}

// yScale returns a tick step of 1, 2 or 5 times a power of ten and the top
// of the axis, a multiple of it, so that the axis has at most five steps
// and reaches peak.
func yScale(peak int64) (step, top int64) {
	if peak < 1 {
		peak = 1
	}
	for p := int64(1); ; p *= 10 {
		for _, m := range []int64{1, 2, 5} {
			step = m * p
			if (peak+step-1)/step <= 5 {
				return step, (peak + step - 1) / step * step
			}
		}
	}
}

// busiest names the bucket with the most decisions, and how many.
func busiest(rep *Report) string {
	best := -1
	for i, b := range rep.Timeline {
		if best < 0 || b.Total() > rep.Timeline[best].Total() {
			best = i
		}
	}
	if best < 0 || rep.Timeline[best].Total() == 0 {
		return "none"
	}
	b := rep.Timeline[best]
	return fmt.Sprintf("%s, with %s", periodLabel(b.Start, rep.Step), number(b.Total()))
}

// bucketLabel describes a bucket in words.
func bucketLabel(b Bucket, step time.Duration) string {
	return fmt.Sprintf("%s: %s decisions (%s allowed, %s denied, %s errors)",
		periodLabel(b.Start, step), number(b.Total()), number(b.Allow), number(b.Deny), number(b.Error))
}

// periodLabel names the bucket starting at t: "2025-01-02 14:00–15:00 UTC",
// "2025-01-02", "2025-01-02 – 2025-01-08".
func periodLabel(t time.Time, step time.Duration) string {
	t = t.UTC()
	switch {
	case step < 24*time.Hour:
		return t.Format("2006-01-02 15:04") + "–" + t.Add(step).Format("15:04") + " UTC"
	case step == 24*time.Hour:
		return t.Format("2006-01-02")
	}
	return t.Format("2006-01-02") + " – " + t.Add(step-24*time.Hour).Format("2006-01-02")
}

// axisLabel is the short label of the bucket starting at t on the x axis.
func axisLabel(t time.Time, step time.Duration) string {
	if step < 24*time.Hour {
		return t.UTC().Format("01-02 15:04")
	}
	return t.UTC().Format("2006-01-02")
}

// stepName names a bar's span: "hour", "day", "7 days".
func stepName(step time.Duration) string {
	switch {
	case step == time.Hour:
		return "hour"
	case step == 24*time.Hour:
		return "day"
	case step%(24*time.Hour) == 0:
		return fmt.Sprintf("%d days", step/(24*time.Hour))
	}
	return step.String()
}

// number writes n with thousands separated by commas.
func number(n int64) string {
	s := fmt.Sprint(n)
	neg := n < 0
	if neg {
		s = s[1:]
	}
	var b []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			b = append(b, ',')
		}
		b = append(b, s[i])
	}
	if neg {
		return "-" + string(b)
	}
	return string(b)
}
