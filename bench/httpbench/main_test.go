package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestHandler: the reply's size, and which Authorization headers are
// accepted, counted and refused.
func TestHandler(t *testing.T) {
	tests := []struct {
		name                   string
		token                  string
		auth                   []string
		wantStatus             int
		with, without, refused int64
	}{
		{name: "direct, no header", token: "tok", wantStatus: 200, without: 1},
		{name: "injected", token: "tok", auth: []string{"Bearer tok"}, wantStatus: 200, with: 1},
		{name: "wrong token", token: "tok", auth: []string{"Bearer forged"}, wantStatus: 401, refused: 1},
		{name: "twice", token: "tok", auth: []string{"Bearer tok", "Bearer tok"}, wantStatus: 401, refused: 1},
		{name: "no token configured", auth: []string{"Bearer any"}, wantStatus: 200, with: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c Counts
			srv := httptest.NewServer(Handler(Config{ReplySize: 17, Token: tt.token}, &c))
			defer srv.Close()
			req, err := http.NewRequest("GET", srv.URL+"/", nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range tt.auth {
				req.Header.Add("Authorization", a)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			if tt.wantStatus == 200 && len(body) != 17 {
				t.Errorf("body %d bytes, want 17", len(body))
			}
			if got := [3]int64{c.WithHeader.Load(), c.WithoutHeader.Load(), c.Refused.Load()}; got != [3]int64{tt.with, tt.without, tt.refused} {
				t.Errorf("counts (with, without, refused) = %v, want %v", got, [3]int64{tt.with, tt.without, tt.refused})
			}
		})
	}
}
