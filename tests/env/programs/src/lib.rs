//! The test environment's own programs (tests/env/testenv and the end-to-end tests start them),
//! apart from the tests: stand-ins for what a cloud or a developer's machine provides.
//!
//! - `testenv-lb` ([`lb`]): the load-balancer stand-in that gives LoadBalancer Services an address
//!   on loopback and forwards it;
//! - `testenv-netns-fwd`: the forwarder of the host's loopback services into the real node's
//!   network namespace ([`netns`]);
//! - `testenv-httpd` ([`httpd`]): a tiny static HTTP server, the payload of the container smoke
//!   tests;
//! - `testenv-exec-credential` and `docker-credential-testenv`: a kubeconfig `exec` plugin and a
//!   Docker credential helper speaking the protocols of gke-gcloud-auth-plugin and
//!   docker-credential-gcloud (binaries only).

pub mod httpd;
pub mod lb;
pub mod netns;
