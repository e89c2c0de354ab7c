// Command vaultserver is the Vault server used by credbroker's tests: the
// upstream Vault CLI (github.com/hashicorp/vault/command) built from the Go
// module proxy, so that tests run against a real "vault server -dev" rather
// than a stand-in. It lives in its own module, credbroker.test/vaultserver,
// so the product's go.mod does not carry Vault's server dependencies;
// scripts/peers/vault.sh builds it once into $CREDBROKER_PEERS.
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
