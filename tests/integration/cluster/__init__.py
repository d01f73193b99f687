"""Tests of several cbserver nodes together: readiness, draining, a balancer in front."""
