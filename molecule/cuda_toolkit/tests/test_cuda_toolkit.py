"""What cuda_toolkit leaves on a Debian 13 node, checked on the converged container (no GPU)."""

from __future__ import annotations

import re

import pytest

from h100fleet.harness import testinfra

testinfra_hosts = testinfra.hosts()

VERSION = "12.4.131~12.4.1-2"
ROOT = "/usr/local/cuda-12.4"
# The packages Debian builds from the CUDA 12.4.1 source package, held in place by the toolkit's exact dependencies.
NVIDIA_PACKAGE = re.compile(r"^Inst (\S*(nvidia|cuda|libcu|libnpp|libnv)\S*)", re.MULTILINE)
KERNEL = """
#include <cstdio>
#include <cuda_runtime.h>

__global__ void scale(float *x, float a, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] *= a;
}

int main() {
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    std::printf("%s %d\\n", cudaGetErrorName(err), count);
    return 0;
}
"""


@pytest.fixture
def scratch(host):
    path = host.check_output("mktemp -d /tmp/cuda_toolkit_test.XXXXXX")
    yield path
    host.run(f"rm -rf {path}")


def test_toolkit_is_the_exact_debian_version(host):
    assert host.check_output("dpkg-query -W -f '${Version}' nvidia-cuda-toolkit") == VERSION
    assert host.package("nvidia-cuda-toolkit").is_installed
    # Its exact dependencies came along: the CUDA 12.4.1 libraries and headers.
    assert host.check_output("dpkg-query -W -f '${Version}' nvidia-cuda-dev") == "12.4.127~12.4.1-2"
    # No recommends (nsight, the visual profiler, the docs: a gigabyte more).
    assert not host.package("nsight-compute").is_installed


def test_toolkit_is_held(host):
    assert host.check_output("dpkg --get-selections nvidia-cuda-toolkit").split() == ["nvidia-cuda-toolkit", "hold"]
    assert "nvidia-cuda-toolkit" in host.check_output("apt-mark showhold").split()


def test_hold_is_in_effect(host):
    # apt refuses to remove the held package, and the packages it depends on at exact versions.
    for package in ("nvidia-cuda-toolkit", "nvidia-cuda-dev"):
        result = host.run(f"apt-get -s -y remove {package}")
        assert result.rc != 0, result.stdout
        assert "held packages" in (result.stdout + result.stderr).lower(), result.stdout + result.stderr


@pytest.mark.parametrize("command", ["upgrade", "dist-upgrade"])
def test_upgrade_proposes_no_nvidia_package(host, command):
    result = host.run(f"apt-get -s {command}")
    assert result.rc == 0, result.stderr
    assert NVIDIA_PACKAGE.findall(result.stdout) == []


def test_cuda_link_selects_this_version(host):
    link = host.file("/usr/local/cuda")
    assert link.is_symlink
    assert host.check_output("readlink -f /usr/local/cuda") == ROOT
    query = host.check_output("update-alternatives --query cuda")
    assert f"Value: {ROOT}" in query
    assert "Status: manual" in query


def test_debian_toolkit_has_nvidia_layout(host):
    # Every program the toolkit packages put in /usr/bin is in $CUDA_HOME/bin.
    programs = host.check_output(
        "dpkg -L nvidia-cuda-toolkit nvidia-profiler | grep '^/usr/bin/' | xargs -n1 basename | sort"
    ).split()
    assert "nvcc" in programs
    for program in programs:
        assert host.check_output(f"readlink {ROOT}/bin/{program}") == f"/usr/bin/{program}", program
    assert host.file(f"{ROOT}/include/cuda_runtime.h").exists
    assert host.file(f"{ROOT}/lib64/libcudart.so").exists
    assert host.file(f"{ROOT}/lib64/stubs/libcuda.so").exists
    assert host.run(f"ls {ROOT}/nvvm/libdevice/libdevice.10.bc").rc == 0


def test_nvcc_is_release_12_4(host):
    version = host.check_output("/usr/local/cuda/bin/nvcc --version")
    assert "Cuda compilation tools, release 12.4, V12.4.131" in version


def test_nvcc_compiles_a_cubin_for_sm90_without_a_profile(host, scratch):
    host.run_expect([0], f"printf '%s' '{KERNEL}' > {scratch}/k.cu")
    # A bare environment, as a build started by a service has: $CUDA_HOME/bin/nvcc must work on its own.
    compile_ = host.run(
        f"cd {scratch} && env -i PATH=/usr/bin:/bin /usr/local/cuda/bin/nvcc -arch=sm_90 -cubin -o k.cubin k.cu"
    )
    assert compile_.rc == 0, compile_.stderr
    sass = host.check_output(f"/usr/local/cuda/bin/cuobjdump -sass {scratch}/k.cubin")
    assert "code for sm_90" in sass
    assert "Function : _Z5scalePffi" in sass


def test_nvcc_builds_and_links_a_program_against_cudart(host, scratch):
    host.run_expect([0], f"printf '%s' '{KERNEL}' > {scratch}/k.cu")
    # Linked against the shared runtime (nvcc's default is static), found through $CUDA_HOME/lib64.
    build = host.run(f"cd {scratch} && /usr/local/cuda/bin/nvcc -arch=sm_90 -cudart shared -o k k.cu")
    assert build.rc == 0, build.stderr
    assert "libcudart.so.12 => /usr/local/cuda/lib64/libcudart.so.12" in host.check_output(
        f"env LD_LIBRARY_PATH=/usr/local/cuda/lib64 ldd {scratch}/k"
    )
    # No GPU here: the runtime answers with an error name instead of crashing.
    assert host.check_output(f"{scratch}/k").startswith("cuda")


def test_profile_sets_cuda_home_path_and_lib64(host):
    profile = host.file("/etc/profile.d/cuda.sh")
    assert profile.mode == 0o644
    assert profile.content_string.startswith("#\n# Ansible managed")
    assert "export CUDA_HOME=/usr/local/cuda\n" in profile.content_string
    login = host.check_output(
        "env -i HOME=/root bash -lc 'echo $CUDA_HOME; echo $PATH; echo $LD_LIBRARY_PATH; command -v nvcc'"
    )
    cuda_home, path, ld_library_path, nvcc = login.splitlines()
    assert cuda_home == "/usr/local/cuda"
    assert path.split(":")[0] == "/usr/local/cuda/bin"
    assert ld_library_path.split(":")[0] == "/usr/local/cuda/lib64"
    assert nvcc == "/usr/local/cuda/bin/nvcc"


def test_role_left_no_scratch_directory(host):
    assert host.run("ls -d /tmp/cuda_toolkit_check.*").rc != 0
