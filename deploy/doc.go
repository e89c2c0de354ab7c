// Package deploy holds no code: it is the home of the tests that check the
// files credbroker is deployed with, without running the platforms they are
// meant for.
//
// The files live at the top of the repository and under this directory:
//
//	Dockerfile, .dockerignore   the container image (packaging_test.go)
//	scripts/release.sh          make release: static binaries and SHA256SUMS (packaging_test.go)
//	deploy/systemd/             the hardened unit for VMs, its sysusers.d and tmpfiles.d
//	                            entries and an example configuration (systemd_test.go)
//	deploy/kubernetes/          sidecar and node-agent manifests, Kustomize base and overlays
//	deploy/ecs/                 an ECS task definition with the broker as a sidecar
//	deploy/grafana/             a dashboard of the broker's metrics
//
// No Docker engine, cluster or init system is needed: the tests parse each
// file and check what it must say, and run the tools that can check a file
// offline (systemd-analyze verify, credbroker check) where they exist.
package deploy
