// Command awsprobe is the app of the ECS example's test: an unmodified
// aws-sdk-go-v2 program that takes its credentials from the SDK's default
// chain, as any AWS program in the app's container would, and calls
// sts:GetCallerIdentity with them. It prints, as one JSON object, where
// the SDK found the credentials, their access key id and the ARN STS
// names for them — never the secret key or the session token.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

type result struct {
	Source      string `json:"source"`
	AccessKeyID string `json:"access_key_id"`
	Expires     string `json:"expires"`
	ARN         string `json:"arn"`
}

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "awsprobe:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return err
	}
	creds, err := cfg.Credentials.Retrieve(ctx)
	if err != nil {
		return fmt.Errorf("credentials: %w", err)
	}
	id, err := sts.NewFromConfig(cfg).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		return fmt.Errorf("GetCallerIdentity: %w", err)
	}
	r := result{Source: creds.Source, AccessKeyID: creds.AccessKeyID, Expires: creds.Expires.UTC().Format(time.RFC3339)}
	if id.Arn != nil {
		r.ARN = *id.Arn
	}
	return json.NewEncoder(os.Stdout).Encode(r)
}
