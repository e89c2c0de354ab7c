package broker

// Log attribute keys, in one place so log lines stay greppable.
const (
	keyDecisionID = "decision_id"
	keyDecision   = "decision"
	keySubject    = "subject"
	keyCredential = "credential"
	keyPolicy     = "policy"
	keyReason     = "reason"
	keyError      = "error"
	keyAddr       = "addr"
	keyPath       = "path"
	keySetVersion = "policy_set_version" // the policy set's version hash, never one policy's
	keyPolicies   = "policies"
	keyRepeated   = "repeated"
	keyInterval   = "interval"
)
