module datajob.dev/hack/image-builder

go 1.26
