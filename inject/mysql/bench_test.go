package mysql_test

import (
	"context"
	"testing"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/credbroker/credbroker/internal/mariadbtest"
)

// BenchmarkListener compares go-sql-driver straight to MariaDB with the
// same client through the listener's Unix socket: a new connection (the
// listener decides, records and logs in upstream), and a 200 000-row
// result on an open one (the relay).
func BenchmarkListener(b *testing.B) {
	srv := mariadbtest.Start(b)
	h := newHarness(b, srv, "", nil)
	direct, _ := gomysql.ParseDSN(srv.DSN(h.user, h.canary, "shop"))
	via := h.config("app", "shop")
	for _, target := range []struct {
		name string
		cfg  *gomysql.Config
	}{{"direct", direct}, {"listener", via}} {
		b.Run("connect/"+target.name, func(b *testing.B) {
			db := open(b, target.cfg)
			db.SetMaxIdleConns(0) // every Ping opens a connection
			for b.Loop() {
				if err := db.PingContext(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("rows/"+target.name, func(b *testing.B) {
			db := open(b, target.cfg)
			db.SetMaxOpenConns(1)
			for b.Loop() {
				rows, err := db.Query("SELECT seq, 'some text in each row' FROM seq_1_to_200000")
				if err != nil {
					b.Fatal(err)
				}
				var n int
				for rows.Next() {
					n++
				}
				rows.Close()
				if n != 200000 {
					b.Fatalf("%d rows", n)
				}
			}
		})
	}
}
