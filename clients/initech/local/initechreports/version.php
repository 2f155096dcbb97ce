<?php
// This file is part of Moodle - https://moodle.org/

/**
 * Version of local_initechreports.
 *
 * @package    local_initechreports
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

defined('MOODLE_INTERNAL') || die();

$plugin->component = 'local_initechreports';
$plugin->version   = 2026120400;
$plugin->release   = '1.0';
$plugin->maturity  = MATURITY_STABLE;
$plugin->requires  = 2024100700; // Moodle 4.5.
