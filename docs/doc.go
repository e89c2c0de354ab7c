// Package docs holds no code: it is the home of the tests that keep the
// documentation — README.md and the pages of this directory — from
// rotting.
//
// Every YAML block of the documentation is a file of a whole example, or
// marked as a fragment of one, by an HTML comment on the line before it:
//
//	<!-- file: sidecar/credbroker.yaml -->      the block is that file of the example "sidecar"
//	<!-- fragment -->                           the block is part of a configuration (or another
//	                                            program's YAML, such as a workflow); it must parse
//
// A file the reader need not see (a policy file an example refers to, a
// secret) may be given whole in the comment itself:
//
//	<!-- file: sidecar/secrets/demo
//	not-a-real-secret
//	-->
//
// TestExamples writes each example's files into a directory of their own
// and loads it with `credbroker check --config DIR`, built from this
// checkout, so every whole configuration the documentation shows is one the
// broker accepts. TestLinks checks that every relative link of the
// documentation names a file of the repository, and a heading of it when
// it has an anchor, and TestNoOutsideReferences that it names no document
// outside the repository. TestMetricsDocumented checks that operations.md
// describes every metric the code defines. TestReadme checks the README's
// opening.
package docs
