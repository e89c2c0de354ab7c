package policies_test

import (
	"fmt"
	"time"

	"github.com/credbroker/credbroker/attest"
	"github.com/credbroker/credbroker/policies"
)

// ExampleDecodeInput stores a decision's input as the broker does and reads
// it back as `credbroker audit replay` does, to evaluate it under another
// Set: numbers keep their Go types.
func ExampleDecodeInput() {
	in := policies.Input{
		Identity: attest.Identity{Method: "unix", Subject: "unix:uid:1000", Claims: map[string]any{"uid": int64(1000), "score": 3.0}},
		Request:  policies.Request{Channel: "socket", Credential: "demo"},
		Now:      time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC),
	}
	stored, err := policies.EncodeInput(in)
	if err != nil {
		panic(err)
	}
	fmt.Println(string(stored))
	back, err := policies.DecodeInput(stored)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%T %T %v\n", back.Identity.Claims["uid"], back.Identity.Claims["score"], back.Now)
	// Output:
	// {"identity":{"claims":{"score":3.0,"uid":1000},"method":"unix","subject":"unix:uid:1000"},"now":"2026-11-30T09:00:00Z","request":{"channel":"socket","credential":"demo"}}
	// int64 float64 2026-11-30 09:00:00 +0000 UTC
}
