"""Public SSH keys of the seeded keypairs (generated once; the private halves were discarded).

Only public keys belong here: the seed never needs a private key, and none is committed.
"""

from __future__ import annotations

PUBLIC_KEYS: dict[str, str] = {
    "alice-ed": (
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOJvflrB5SzZpHyTDHaxwwQCXIUsiCaUELEG+ZxJhmVW sta"
        "ckhop-seed-alice-ed"
    ),
    "alice-rsa": (
        "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDNzTK+JTTbXKyWlrl0/R/0MJuT3OToGqaoRwbiHh9Idwlq"
        "KSx/D+8LHyADDXmDtIWArbM3EOWqj3MyglwPn5IlHXfsYz6Dz2K9gx3K1DAE5EtuBunAGkrNahGyqsfE7CLg"
        "aZvcwBcGe/GOATC9qXdILrIHFLzTThEvc4O8/dpSGnNO1S7S7Y1CFHpnlsNP3MTJ0ZpvNaXqzwRAdTc1z/cP"
        "wqA+HC/P/lX7mD057vEZZclwzPGogTEtNOdJTSjy4PpHKaUMoG7Hhsj9381DYFfGsxZwr6fYFWjWBWZGYEw1"
        "2rL90gtR9372yIn7KW2k3dtGxj1iBEacycuzgfSTuCed stackhop-seed-alice-rsa"
    ),
    "bob-ed": (
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICdKu/gA5a7705uWMnyfnveMaK1xiNShLDJhPshdq5zU sta"
        "ckhop-seed-bob-ed"
    ),
    "carol-rsa": (
        "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCodDagvFKtQxeySzkJ/9wmHKjiKIvVGQSsHm684QDw8Slc"
        "FW30sSh0VwEABExeVXd9R3xQS8rns0Hn4CKTkOrqKnjWSdEGXM6fpatFgylVUJ1WEUyJ5oAu70QJ/jReo/Gs"
        "QfHR3StR2izWB+OphZDQ+LETal2w2QGBYWROxUjX9h+2XuORlbauKX4hK0D5qh5SKs0AcQGlSqVyJpxPEG+T"
        "49qMvhzcIonvgqsa78fKLXnWOuOU5um+JPj4Vn5pS26PpP7l4oYhfycPii2DutStvFfCrdMqPNjopsMgACas"
        "q2ysX0lpDNY1ZaCpsEoxFtOBpirewcIIhqaYtSwYGAqr stackhop-seed-carol-rsa"
    ),
    "dave-ed": (
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFJG6M5fn1ekkHkMxgiwcDzaKAol4z00TBI4JMsJyfGY sta"
        "ckhop-seed-dave-ed"
    ),
    "dave-rsa": (
        "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDGPeCwGXhZvHn4U7R0va8+i4VhsaGM9O27HASlooZzDjSz"
        "Kh4+FFUrIm7yka/6tAeWHfrq8KYpyjmBXKYYACb3DExwQKrBAULvnc4PWgFlG8dTowwkY5su70VhDStost6J"
        "mylElsughn92kgj8y91Bu2b5WGNfUkmJ2XrUQKh7YOGpyRyYQL4KSjhqshoifI+ISbjI63qBKO52Tjr4sNDs"
        "bV+vXyMmam+cnMPHFP4wwA8DxJyGYVL/9HmS0g1xbCNdFb/Q59Cd3jvd4B8mVfg6l0S1e6laVhzKs/ft8xa7"
        "Ptx3ggQvtzQMj8ICvTpfJN323XBfPiIsSdtc/4trVGY1 stackhop-seed-dave-rsa"
    ),
    "dst-lina-ed": (
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIfrdTjpppRxs4bhTqYGGgBGS11PzDuYKNR7MjlpFQOb sta"
        "ckhop-seed-dst-lina-ed"
    ),
    "erin-ed": (
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC2OJbnpNTZNea1+gkDbQfakPyoKw87COXWAvuY+zIr0 sta"
        "ckhop-seed-erin-ed"
    ),
    "frank-rsa": (
        "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCiaQ8GoXVkT7dNe7vSSmDBZ8vzM6W640JwQW6JXq3GGG0B"
        "AXhjqOOpeQd1h7D5sEc2BI9uvF2Ne7TVVBsg6TqvaMUOxZrtldUnWUu60iASAuVU73BnOfoArNVgpWcumeX6"
        "2I0zz2xVrXJdZLEI+3rAn/e1Qjyn1oSHvCKVRn/WldJZWY0W6nglvoDKzHM/FXdKZh2mGMuxp7Y1hsSBBq+o"
        "uvlZjmF/zUiudurTABOPizUakURu2gWAzv2F0rB22VUo0uXjgAPtYeqMh0IOisoHcYYvtr0k46V3liTvgQNn"
        "7QthDPYYUBdoQs3KBLwmUGS8gQ2spO2Indpps91mBK6b stackhop-seed-frank-rsa"
    ),
    "lars-ed": (
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFXXqgPyHkdZdfz7gNDBsjZvB2eV8xa/66trKvjSXmtd sta"
        "ckhop-seed-lars-ed"
    ),
    "leo-ed": (
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC4dG/5wVIblMjpFnslmjhbDOEek/fbAbnr2aryx/tZN sta"
        "ckhop-seed-leo-ed"
    ),
    "lina-ed": (
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAII4yPt0snEOfe1Dtt2w2IqqYP7Qx5Ndv8eQCw3jOF0dO sta"
        "ckhop-seed-lina-ed"
    ),
    "lina-rsa": (
        "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC5CrbJBKHpy+jq0dupk0mgxIxRmnhM6V+MSNngukuGCHKv"
        "N5ScVhW58VaORG6Sr1O/BrH43PMRnEWW4uRDOuV+y3lUt9+OaeYM0dWMBE+mkiHAKTg+wPA+wydNqWTvVU/f"
        "Jm/Ll8Gp3GT8XBEzYmL8yzz6TN65QxZWgIB14AUDSwJyLyKz8a/VYtg9oR/ofa6EbpMC1P4GaA6DyjZhlitE"
        "BGqgtH4fVkn5ORX0d1GW+YcdOcNs0tr2jpLCdX/P+KTR1IPCyBABqCGI/FLyZC4Kvy0bvek7Xx1RsDsI8KzA"
        "IrSqvZzStVAvzyoyvuysYZkOX6xtStcVPAY9q77mzKtz stackhop-seed-lina-rsa"
    ),
    "lucy-rsa": (
        "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC8DuTnpWz4pUz5iwjhlIkDvZLeChrpVlML6sRgVzVMVeQp"
        "Dxo9jKcssafrfaODas8+wqQPhz4g198u1YHOHEg9IbJa6CjWIVcor3/KUqatB448BeypGVD4F/DGRZ5K6c4k"
        "EggTekJl5c4BzVcd/wsJuMWIoJF1myleYrFvtL6eJ0Mv00/YyHaST3zFlGvGgya965GU3YD+TGtm/YuR9oa5"
        "WrfFArRE/CL90mJ/ABabCnHkpIBYBdf0G7ubkO49ta862SPDSqdN3LDrhLUcX5t6IJoECSPr8Ta0J3/F+66F"
        "5v2j7v047O0wgkWiRPFwt8hv6za1fZc0A82tbPp5tgsx stackhop-seed-lucy-rsa"
    ),
}
