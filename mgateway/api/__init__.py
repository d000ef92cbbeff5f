# -*- test-case-name: tests.test_media_gateway_api,tests.test_configuration_api,tests.test_file_exporter_api -*-
"""api"""
