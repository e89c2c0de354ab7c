package audit

import "encoding/json"

// DecidingPolicyVersion returns the version hash of the policy that
// decided (Policy): 12 hex digits over that one policy's compiled content.
// It is "" when no policy decided: a default deny, whose PolicyVersion is
// the policy set's (see PolicySetVersion), or a refusal before policies
// were evaluated.
func (r *Record) DecidingPolicyVersion() string {
	if r.Policy == "" {
		return ""
	}
	return r.PolicyVersion
}

// PolicySetVersion returns the version hash of the policy set in force,
// where the row records it: a default deny, which no single policy made,
// stores the set's version in place of a policy's. It is "" for a row a
// policy decided (see DecidingPolicyVersion) and for a refusal before
// policies were evaluated.
func (r *Record) PolicySetVersion() string {
	if r.Policy != "" {
		return ""
	}
	return r.PolicyVersion
}

// Exe returns the path of the caller's executable as the unix attestor
// saw it: the exe claim of a unix identity, else that of the unix peer
// behind a token identity, which the stored input records. It is "" when
// neither is known.
func (r *Record) Exe() string {
	if exe, ok := r.Claims["exe"].(string); ok {
		return exe
	}
	if len(r.Input) == 0 {
		return ""
	}
	var in struct {
		Identity struct {
			Peer *struct {
				Claims struct {
					Exe string `json:"exe"`
				} `json:"claims"`
			} `json:"peer"`
		} `json:"identity"`
	}
	if json.Unmarshal(r.Input, &in) != nil || in.Identity.Peer == nil {
		return ""
	}
	return in.Identity.Peer.Claims.Exe
}
