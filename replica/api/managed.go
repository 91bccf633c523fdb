package api

import (
	"crypto/sha256"
	"encoding/hex"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Managed is what the operator asks the leader's agent to keep: the
// ReplicaSet's spec.roles and spec.databases, with each password as a
// SCRAM verifier (Secret names.ManagedSecret, key names.ManagedKey).
type Managed struct {
	Roles     []ManagedRole     `json:"roles,omitempty"`
	Databases []ManagedDatabase `json:"databases,omitempty"`
}

// ManagedRole is one role; Ensure is "Present" or "Absent".
type ManagedRole struct {
	Name   string `json:"name"`
	Ensure string `json:"ensure"`
	Login  bool   `json:"login"`
	// PasswordVerifier is the SCRAM-SHA-256 verifier to set; empty leaves
	// the password as it is.
	PasswordVerifier string   `json:"passwordVerifier,omitempty"`
	InRoles          []string `json:"inRoles,omitempty"`
	ConnectionLimit  int32    `json:"connectionLimit"`
}

// ManagedDatabase is one database; Ensure is "Present" or "Absent".
type ManagedDatabase struct {
	Name       string   `json:"name"`
	Ensure     string   `json:"ensure"`
	Owner      string   `json:"owner,omitempty"`
	Extensions []string `json:"extensions,omitempty"`
}

// ManagedResult is the leader's account of the last time it applied a
// Managed: Version is the digest of the Secret's data it applied
// (ManagedVersion), so the operator knows which spec the items answer.
type ManagedResult struct {
	Version   string        `json:"version"`
	AppliedAt metav1.Time   `json:"appliedAt"`
	Roles     []ManagedItem `json:"roles,omitempty"`
	Databases []ManagedItem `json:"databases,omitempty"`
}

// ManagedItem is one role's or database's outcome: State is one of the
// ReplicaSet's ManagedState values (Applied, Dropped, Failed).
type ManagedItem struct {
	Name    string `json:"name"`
	State   string `json:"state"`
	Message string `json:"message,omitempty"`
}

// ManagedVersion is the digest of a ManagedSecret's data that
// ManagedResult.Version names.
func ManagedVersion(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:8])
}
