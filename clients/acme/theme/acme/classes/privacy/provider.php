<?php
// This file is part of the ACME theme for Moodle - https://moodle.org/

namespace theme_acme\privacy;

/**
 * theme_acme stores no personal data.
 *
 * @package    theme_acme
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */
class provider implements \core_privacy\local\metadata\null_provider {
    /**
     * The language string that says why.
     *
     * @return string
     */
    public static function get_reason(): string {
        return 'privacy:metadata';
    }
}
