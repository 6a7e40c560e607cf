# A stand-in for python:3.12-slim, for tests/with-docker.sh where no registry can be reached:
# a Debian userland (BASE, imported) and a CPython 3.12 built on this machine (python.tar, under
# its own prefix), with pip told to install from the wheels beside it (pika, setuptools), as
# the image's builds get no network. Where it differs: not Debian's slim image, its CPython is
# this machine's, and pip reads no index.
ARG BASE
FROM ${BASE}
ARG PREFIX
ADD python.tar /
COPY wheels /wheels
RUN for name in python python3 pip pip3; do ln -sf "$PREFIX/bin/$name" /usr/local/bin/$name; done \
 && sed -i "1s|.*|#!$PREFIX/bin/python3.12|" "$PREFIX"/bin/pip*
ENV LANG=C.UTF-8 PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels
CMD ["python3"]
