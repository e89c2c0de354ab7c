package client_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/credbroker/credbroker/client"
)

// The examples run against a real broker that TestMain started, whose
// socket is in $CREDBROKER_SOCKET.

func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := client.New("") // the socket in $CREDBROKER_SOCKET, else client.DefaultSocket
	cred, err := c.Get(ctx, "demo")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(cred.Name, cred.Kind, cred.Fields())
	// The values are in cred.Data; printing cred shows only field names.
	fmt.Println(cred.ExpiresAt.After(time.Now()), cred.LeaseID != "", cred.DecisionID != "")
	// Output:
	// demo static [value]
	// true true true
}

func Example_errors() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := client.New("").Get(ctx, "forbidden")
	var refusal *client.Error
	if errors.As(err, &refusal) {
		fmt.Println(errors.Is(err, client.ErrDenied), refusal.Status, refusal.Code, refusal.Message)
	}
	_, err = client.New("/nonexistent/broker.sock").Get(ctx, "demo")
	fmt.Println(errors.Is(err, client.ErrUnreachable))
	// Output:
	// true 403 denied denied by policy nobody-reads-forbidden
	// true
}

func ExampleClient_Source() {
	ctx, cancel := context.WithCancel(context.Background())
	src, err := client.New("").Source(ctx, "demo", client.OnRefreshError(func(err error) {
		fmt.Println("refresh failed:", err) // a log line in a real application
	}))
	if err != nil {
		fmt.Println(err)
		cancel()
		return
	}
	cred := src.Current()
	fmt.Println(cred.Name, cred.Fields())
	// A real application reconnects on each change until it stops:
	//
	//	for cred := range src.Changes() { pool.Reconnect(cred.Data["username"], cred.Data["password"]) }
	cancel()
	<-src.Done()
	// Output:
	// demo [value]
}
