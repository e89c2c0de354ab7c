package mysql

import (
	"fmt"
	"math/bits"
	"strings"
)

// Capability flags of the client/server protocol (CLIENT_*).
const (
	capLongPassword     uint32 = 1 << 0 // MariaDB: CLIENT_MYSQL (no MariaDB extended capabilities)
	capFoundRows        uint32 = 1 << 1
	capLongFlag         uint32 = 1 << 2
	capConnectWithDB    uint32 = 1 << 3
	capNoSchema         uint32 = 1 << 4
	capCompress         uint32 = 1 << 5
	capODBC             uint32 = 1 << 6
	capLocalFiles       uint32 = 1 << 7
	capIgnoreSpace      uint32 = 1 << 8
	capProtocol41       uint32 = 1 << 9
	capInteractive      uint32 = 1 << 10
	capSSL              uint32 = 1 << 11
	capIgnoreSigpipe    uint32 = 1 << 12
	capTransactions     uint32 = 1 << 13
	capReserved         uint32 = 1 << 14
	capSecureConnection uint32 = 1 << 15
	capMultiStatements  uint32 = 1 << 16
	capMultiResults     uint32 = 1 << 17
	capPSMultiResults   uint32 = 1 << 18
	capPluginAuth       uint32 = 1 << 19
	capConnectAttrs     uint32 = 1 << 20
	capPluginAuthLenenc uint32 = 1 << 21
	capExpiredPasswords uint32 = 1 << 22
	capSessionTrack     uint32 = 1 << 23
	capDeprecateEOF     uint32 = 1 << 24
	capOptionalMetadata uint32 = 1 << 25
	capZstdCompression  uint32 = 1 << 26
	capQueryAttributes  uint32 = 1 << 27
	capMultiFactorAuth  uint32 = 1 << 28
	capCapabilityExt    uint32 = 1 << 29
	capSSLVerifyServer  uint32 = 1 << 30
	capRememberOptions  uint32 = 1 << 31
)

// capNames names the flags for error messages.
var capNames = [32]string{
	"CLIENT_LONG_PASSWORD", "CLIENT_FOUND_ROWS", "CLIENT_LONG_FLAG", "CLIENT_CONNECT_WITH_DB",
	"CLIENT_NO_SCHEMA", "CLIENT_COMPRESS", "CLIENT_ODBC", "CLIENT_LOCAL_FILES",
	"CLIENT_IGNORE_SPACE", "CLIENT_PROTOCOL_41", "CLIENT_INTERACTIVE", "CLIENT_SSL",
	"CLIENT_IGNORE_SIGPIPE", "CLIENT_TRANSACTIONS", "CLIENT_RESERVED", "CLIENT_SECURE_CONNECTION",
	"CLIENT_MULTI_STATEMENTS", "CLIENT_MULTI_RESULTS", "CLIENT_PS_MULTI_RESULTS", "CLIENT_PLUGIN_AUTH",
	"CLIENT_CONNECT_ATTRS", "CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA", "CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS", "CLIENT_SESSION_TRACK",
	"CLIENT_DEPRECATE_EOF", "CLIENT_OPTIONAL_RESULTSET_METADATA", "CLIENT_ZSTD_COMPRESSION_ALGORITHM", "CLIENT_QUERY_ATTRIBUTES",
	"MULTI_FACTOR_AUTHENTICATION", "CLIENT_CAPABILITY_EXTENSION", "CLIENT_SSL_VERIFY_SERVER_CERT", "CLIENT_REMEMBER_OPTIONS",
}

// capList names the flags set in c.
func capList(c uint32) string {
	var names []string
	for c != 0 {
		i := bits.TrailingZeros32(c)
		names = append(names, capNames[i])
		c &^= 1 << i
	}
	return strings.Join(names, ", ")
}

// mirrored are the flags that shape the command phase, which the listener
// relays without looking: whichever of them the client picks, the
// upstream session must use exactly the same. Each is offered by every
// MySQL server since 5.7 and MariaDB server since 10.2, so the listener
// advertises them all before it knows its upstream, and a client's pick
// can be mirrored. Not among them, so never advertised and never
// negotiated: CLIENT_COMPRESS and ZSTD (the relay passes bytes, not
// compressed frames), CLIENT_QUERY_ATTRIBUTES and
// CLIENT_OPTIONAL_RESULTSET_METADATA (MySQL 8 only: they change the
// framing of commands and results, and MariaDB lacks them),
// CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS (an expired issued password is an
// error, not a sandbox session), and MariaDB's extended capabilities
// (CLIENT_LONG_PASSWORD, which MariaDB reads as CLIENT_MYSQL, is set on
// both legs).
const mirrored = capFoundRows | capLongFlag | capLocalFiles | capIgnoreSpace | capInteractive |
	capTransactions | capMultiStatements | capMultiResults | capPSMultiResults |
	capSessionTrack | capDeprecateEOF

// perLeg are the flags of the handshake itself, which each leg negotiates
// on its own: the listener speaks them as server to the client and as
// client to the upstream.
const perLeg = capLongPassword | capConnectWithDB | capProtocol41 | capSSL | capSecureConnection |
	capPluginAuth | capConnectAttrs | capPluginAuthLenenc

// advertised returns the flags the listener's greeting offers: the
// mirrored ones and the handshake's own, CLIENT_SSL only when it has a
// certificate for clients.
func advertised(clientTLS bool) uint32 {
	c := mirrored | perLeg
	if !clientTLS {
		c &^= capSSL
	}
	return c
}

// upstreamCaps returns the flags the listener sends the upstream for a
// client that settled on client (already masked by what the listener
// advertised), given what the upstream offers: the client's mirrored
// flags, all of which the upstream must offer, and the handshake flags
// the listener uses on this leg. withDB and withAttrs say whether a
// default database and connection attributes are sent; useTLS whether
// the leg switches to TLS.
func upstreamCaps(client, offered uint32, withDB, withAttrs, useTLS bool) (uint32, error) {
	want := client & mirrored
	// LOAD DATA LOCAL: without the flag the upstream refuses the statement
	// with an error instead of asking for the file; nothing else changes.
	want &^= capLocalFiles &^ offered
	if missing := want &^ offered; missing != 0 {
		return 0, fmt.Errorf("the upstream does not offer %s, which the client chose: a MySQL 5.7 / MariaDB 10.2 or later server offers them", capList(missing))
	}
	if missing := (capProtocol41 | capSecureConnection) &^ offered; missing != 0 {
		return 0, fmt.Errorf("the upstream does not offer %s: it is older than MySQL 4.1", capList(missing))
	}
	c := want | capLongPassword | capProtocol41 | capSecureConnection
	c |= offered & (capPluginAuth | capPluginAuthLenenc)
	if withDB {
		if offered&capConnectWithDB == 0 {
			return 0, fmt.Errorf("the upstream does not offer %s, needed to open the client's default database", capList(capConnectWithDB))
		}
		c |= capConnectWithDB
	}
	if withAttrs {
		c |= offered & capConnectAttrs
	}
	if useTLS {
		c |= capSSL
	}
	return c, nil
}
