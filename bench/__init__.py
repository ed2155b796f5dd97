"""Benchmarks, each a script run from the repository root (see the README's Benchmarks); a
package only so that mypy checks them with the rest."""
