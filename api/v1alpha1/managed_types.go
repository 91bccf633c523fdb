package v1alpha1

// Ensure says whether a declared role or database must exist.
// +kubebuilder:validation:Enum=Present;Absent
type Ensure string

const (
	// EnsurePresent creates the object and keeps it as declared.
	EnsurePresent Ensure = "Present"
	// EnsureAbsent drops the object. Removing an item from the list
	// drops nothing: the object stays in PostgreSQL as it is, unmanaged.
	EnsureAbsent Ensure = "Absent"
)

// RoleSpec is a PostgreSQL role the operator keeps on the leader
// (docs/api.md, "Roles and databases").
// +kubebuilder:validation:XValidation:rule="!has(self.inRoles) || !(self.name in self.inRoles)",message="a role cannot be a member of itself"
type RoleSpec struct {
	// name of the role. Not one of Regent's own (postgres,
	// regent_replication, the bootstrap owner) nor a pg_ role.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z_][a-z0-9_]*$`
	// +kubebuilder:validation:XValidation:rule="!self.startsWith('pg_') && !(self in ['postgres', 'regent_replication', 'public'])",message="the role name is reserved: postgres, regent_replication, public and pg_* belong to PostgreSQL or Regent"
	Name string `json:"name"`

	// ensure is Present (the default: create the role and keep it as
	// declared) or Absent (drop it; PostgreSQL refuses while it owns
	// objects, and status says so).
	// +kubebuilder:default=Present
	// +optional
	Ensure Ensure `json:"ensure,omitempty"`

	// login lets the role log in. Default true.
	// +kubebuilder:default=true
	// +optional
	Login *bool `json:"login,omitempty"`

	// passwordSecret is the role's password: a key of a Secret in the
	// cluster's namespace (a kubernetes.io/basic-auth Secret's is
	// "password"). Changing the Secret changes the password. Without it
	// the role's password is not managed: one set by hand stays.
	// +optional
	PasswordSecret *SecretKeyRef `json:"passwordSecret,omitempty"`

	// inRoles are the roles this role is a member of, and only those:
	// memberships granted by hand and not listed are revoked.
	// +kubebuilder:validation:MaxItems=32
	// +listType=set
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^[a-z_][a-z0-9_]*$`
	// +optional
	InRoles []string `json:"inRoles,omitempty"`

	// connectionLimit is how many connections the role may hold at once;
	// -1 (the default) is no limit.
	// +kubebuilder:default=-1
	// +kubebuilder:validation:Minimum=-1
	// +optional
	ConnectionLimit *int32 `json:"connectionLimit,omitempty"`
}

// DatabaseSpec is a database the operator keeps on the leader.
type DatabaseSpec struct {
	// name of the database; not postgres, template0 or template1.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z_][a-z0-9_]*$`
	// +kubebuilder:validation:XValidation:rule="!(self in ['postgres', 'template0', 'template1'])",message="postgres, template0 and template1 are PostgreSQL's own databases"
	Name string `json:"name"`

	// ensure is Present (the default) or Absent (drop the database;
	// PostgreSQL refuses while anyone is connected to it, and status says
	// so until they leave).
	// +kubebuilder:default=Present
	// +optional
	Ensure Ensure `json:"ensure,omitempty"`

	// owner is the role that owns the database: one of spec.roles, the
	// bootstrap owner, or a role that exists already.
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z_][a-z0-9_]*$`
	// +optional
	Owner string `json:"owner,omitempty"`

	// extensions are created in the database (CREATE EXTENSION IF NOT
	// EXISTS) when the image has them. One removed from the list stays.
	// +kubebuilder:validation:MaxItems=32
	// +listType=set
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^[a-z_][a-z0-9_-]*$`
	// +optional
	Extensions []string `json:"extensions,omitempty"`
}

// ManagedState is how far a declared role or database got.
type ManagedState string

const (
	// ManagedPending is not applied on the leader yet (no leader, or the
	// leader has not seen this version of the spec).
	ManagedPending ManagedState = "Pending"
	// ManagedApplied exists as declared.
	ManagedApplied ManagedState = "Applied"
	// ManagedDropped is ensure Absent, and it does not exist.
	ManagedDropped ManagedState = "Dropped"
	// ManagedFailed was refused by PostgreSQL or the operator; message says why.
	// Retried every 30 s and on every change.
	ManagedFailed ManagedState = "Failed"
)

// ManagedObjectStatus is one declared role's or database's outcome.
type ManagedObjectStatus struct {
	Name  string       `json:"name"`
	State ManagedState `json:"state"`
	// message is PostgreSQL's or the operator's reason for Failed.
	// +optional
	Message string `json:"message,omitempty"`
}
