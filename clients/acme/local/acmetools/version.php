<?php
// This file is part of Moodle - https://moodle.org/

/**
 * Version of local_acmetools.
 *
 * @package    local_acmetools
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

defined('MOODLE_INTERNAL') || die();

$plugin->component = 'local_acmetools';
$plugin->version   = 2026120400;
$plugin->release   = '1.0';
$plugin->maturity  = MATURITY_STABLE;
$plugin->requires  = 2025100600; // Moodle 5.1.
